//! Test harness shared by the integration tests. Each `tests/*.rs` declares `mod support;`.
#![allow(dead_code)]

pub mod conn;
pub mod contract;
pub mod etcd;
pub mod fake_consul;
pub mod fakes;
pub mod fixtures;
pub mod netns;
pub mod pika;
pub mod ports;
pub mod prom;
pub mod proxy;
pub mod real_pika;
pub mod redis;
pub mod schema;
pub mod snapshots;
pub mod stale_client;
