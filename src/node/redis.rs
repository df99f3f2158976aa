//! `RedisNodes`: the production `Nodes` over the `redis` crate (tokio), one short-lived
//! connection per call, with connect and command timeouts and AUTH.
