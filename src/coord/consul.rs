//! `Consul`: sessions + KV acquire + CAS over Consul's HTTP API (thin client on reqwest).
