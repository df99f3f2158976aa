//! One accepted connection: hyper's HTTP/1.1 server with a header read timeout, graceful
//! shutdown when told, and a lingering close so an unread upload does not turn our 413 into a
//! connection reset.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::ServerLimits;

/// After a connection ends, its unread input is read and discarded for at most this long (and
/// [`LINGER_BYTES`]) before the socket is closed: closing with unread data makes the kernel
/// send a reset, and a client still uploading an oversized body would then see a broken pipe
/// instead of our 413.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// linger after hyper is done. Reads and writes go through `&TcpStream` (readiness + try_*);
/// hyper's shutdown is a no-op here (the task does it).
struct SharedIo(Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            match self.0.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            match self.0.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One HTTP/1.1 connection: header read timeout, graceful shutdown on `close`, then a
/// lingering close (see [`LINGER`]).
pub(super) async fn serve_connection(
    tcp: tokio::net::TcpStream,
    router: Router,
    limits: ServerLimits,
    mut close: tokio::sync::watch::Receiver<bool>,
) {
    let tcp = Arc::new(tcp);
    let io = hyper_util::rt::TokioIo::new(SharedIo(Arc::clone(&tcp)));
    let svc = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Boxed so it can be dropped (releasing hyper's handle on the socket) before the linger.
    let mut conn = Box::pin(builder.serve_connection(io, svc));
    let closing = *close.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut closing = closing;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                break;
            }
            changed = close.changed(), if !closing => {
                closing = true;
                if changed.is_err() || *close.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(conn);
    // hyper is done with the socket: send FIN, then read what the client still sends (an
    // oversized body we answered 413 to) so the close does not turn into a reset.
    let Ok(mut tcp) = Arc::try_unwrap(tcp) else {
        return;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
