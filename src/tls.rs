//! One TLS stack: rustls with the `ring` crypto provider, for etcd (tonic) and Consul (reqwest).
//!
//! reqwest is built with `rustls-no-provider` (so that aws-lc is not compiled in next to ring),
//! which means a process-wide rustls provider must be installed before any `reqwest::Client` is
//! built. [`install_crypto_provider`] does that once; [`crate::coord::consul::Consul::new`]
//! calls it, and so must any other code (tests included) that builds a reqwest client first.

/// Install rustls' `ring` provider as the process default (idempotent, thread-safe). A no-op
/// without the `consul-tls` feature (reqwest then has no TLS backend at all).
pub fn install_crypto_provider() {
    #[cfg(feature = "consul-tls")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means another provider was installed first (by an embedding program): keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}
