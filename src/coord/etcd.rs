//! `Etcd`: lease + txn lock and mod_revision CAS over etcd v3 (etcd-client).
