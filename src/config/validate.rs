//! Parsing and the checks serde cannot do: names, duplicates, timing rules, secret sources,
//! renamed commands. Errors name the file and the field.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

impl Config {
    /// Parse TOML text strictly. `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = e
                .span()
                .map(|s| {
                    let upto = &text.as_bytes()[..s.start.min(text.len())];
                    let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "-".into());
            ConfigError {
                file: file.to_string(),
                field,
                message: msg,
            }
        })
    }

    /// Check everything that serde cannot: names, duplicates, timing rules.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.validate_clusters(file)?;
        self.validate_service(file)?;
        self.validate_policy(file)?;
        self.validate_coordinator(file)?;
        self.validate_webhook(file)
    }

    /// `[[cluster]]`: names, nodes, passwords, renamed commands.
    fn validate_clusters(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        if self.clusters.is_empty() {
            return Err(err(
                "cluster".into(),
                "at least one [[cluster]] is required".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let at = format!("cluster[{i}]");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
            {
                return Err(err(
                    format!("{at}.name"),
                    format!("{:?} must be non-empty and use only [A-Za-z0-9._-]", c.name),
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err(err(
                    format!("{at}.name"),
                    format!("duplicate cluster name {:?}", c.name),
                ));
            }
            if c.nodes.len() < 2 {
                return Err(err(
                    format!("cluster.{}.nodes", c.name),
                    "a cluster needs at least 2 nodes (a master and a replica)".into(),
                ));
            }
            let mut addrs = BTreeSet::new();
            for (j, n) in c.nodes.iter().enumerate() {
                if !addrs.insert(n.addr.clone()) {
                    return Err(err(
                        format!("cluster.{}.nodes[{j}].addr", c.name),
                        format!("duplicate node {}", n.addr),
                    ));
                }
            }
            if let Some(p) = &c.password {
                check_source(p, &format!("cluster.{}.password", c.name), file)?;
            }
            check_renames(c, file)?;
        }
        Ok(())
    }

    /// `[service]` and `[timeouts]`.
    fn validate_service(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let sv = &self.service;
        if sv.events_file_max_bytes < crate::service::events::MIN_FILE_MAX_BYTES {
            return Err(err(
                "service.events_file_max_bytes".into(),
                format!(
                    "must be at least {} bytes",
                    crate::service::events::MIN_FILE_MAX_BYTES
                ),
            ));
        }
        for (name, d) in [
            ("service.header_read_timeout", sv.header_read_timeout),
            ("service.body_read_timeout", sv.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(err(name.into(), "must be > 0".into()));
            }
        }
        if sv.max_connections == 0 {
            return Err(err(
                "service.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if sv.events_file_keep < 2 {
            return Err(err(
                "service.events_file_keep".into(),
                "must be at least 2 (the current file and one rotated file)".into(),
            ));
        }
        let t = &self.timeouts;
        if t.connect.is_zero() || t.command.is_zero() {
            return Err(err(
                "timeouts".into(),
                "connect and command timeouts must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// `[policy]`: timeouts, and a lock TTL above the worst-case action.
    fn validate_policy(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let (p, t) = (&self.policy, &self.timeouts);
        if p.min_observed == 0 {
            return Err(err(
                "policy.min_observed".into(),
                "must be at least 1".into(),
            ));
        }
        if p.max_parallel_full_syncs == 0 {
            return Err(err(
                "policy.max_parallel_full_syncs".into(),
                "must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("policy.full_sync_timeout", p.full_sync_timeout),
            ("policy.promote_timeout", p.promote_timeout),
            ("policy.link_timeout", p.link_timeout),
            ("policy.lock_ttl", p.lock_ttl),
        ] {
            if d.is_zero() {
                return Err(err(name.into(), "must be > 0".into()));
            }
        }
        let worst = p.worst_case_action(t);
        if p.lock_ttl <= worst {
            return Err(err(
                "policy.lock_ttl".into(),
                format!(
                    "{} must exceed the worst-case action time {} \
                     (confirm_window + the longest step: detach_timeout + 2×link_timeout, + 6 command round trips)",
                    humantime::format_duration(p.lock_ttl),
                    humantime::format_duration(worst),
                ),
            ));
        }
        Ok(())
    }

    /// `[coordinator]` of the configured kind.
    fn validate_coordinator(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let p = &self.policy;
        match self.coordinator.kind {
            CoordinatorKind::Local => {}
            CoordinatorKind::Consul => {
                let c = &self.coordinator.consul;
                if !(c.address.starts_with("http://") || c.address.starts_with("https://")) {
                    return Err(err(
                        "coordinator.consul.address".into(),
                        format!("{:?} must start with http:// or https://", c.address),
                    ));
                }
                // The lock TTL is Consul's session TTL: Consul accepts 10 s to 24 h.
                if p.lock_ttl < Duration::from_secs(10) || p.lock_ttl > Duration::from_secs(86400) {
                    return Err(err(
                        "policy.lock_ttl".into(),
                        "with the consul coordinator it is the session TTL: Consul accepts 10s to 24h".into(),
                    ));
                }
                if c.lock_delay > Duration::from_secs(60) {
                    return Err(err(
                        "coordinator.consul.lock_delay".into(),
                        "Consul accepts 0 to 60s".into(),
                    ));
                }
                if c.prefix.is_empty() || c.prefix.starts_with('/') {
                    return Err(err(
                        "coordinator.consul.prefix".into(),
                        "must be non-empty and must not start with '/'".into(),
                    ));
                }
                if let Some(s) = &c.token {
                    check_source(s, "coordinator.consul.token", file)?;
                }
            }
            CoordinatorKind::Etcd => {
                let e = &self.coordinator.etcd;
                if e.endpoints.is_empty() {
                    return Err(err(
                        "coordinator.etcd.endpoints".into(),
                        "at least one endpoint".into(),
                    ));
                }
                if let Some(s) = &e.password {
                    check_source(s, "coordinator.etcd.password", file)?;
                }
                if e.password.is_some() != e.user.is_some() {
                    return Err(err(
                        "coordinator.etcd.user".into(),
                        "user and password go together".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[webhook]`: authentication and bounds.
    fn validate_webhook(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        self.notify.validate(file)?;
        let w = &self.webhook;
        if let Some(s) = &w.bearer_token {
            check_source(s, "webhook.bearer_token", file)?;
        }
        if let Some(s) = &w.basic_password {
            check_source(s, "webhook.basic_password", file)?;
        }
        if let Some(s) = &w.read_only_token {
            check_source(s, "webhook.read_only_token", file)?;
        }
        if w.basic_user.is_some() != w.basic_password.is_some() {
            return Err(err(
                "webhook.basic_user".into(),
                "basic_user and basic_password go together".into(),
            ));
        }
        if w.bearer_token.is_none() && w.basic_user.is_none() && !w.allow_unauthenticated {
            return Err(err(
                "webhook".into(),
                "set bearer_token or basic_user/basic_password, or allow_unauthenticated = true"
                    .into(),
            ));
        }
        if w.reply_within.is_zero() {
            return Err(err(
                "webhook.reply_within".into(),
                "must be > 0 (and below Alertmanager's notification timeout, 10s by default)"
                    .into(),
            ));
        }
        if w.max_body_bytes < 1024 {
            return Err(err(
                "webhook.max_body_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

/// `rename_commands`: only commands we send, each renamed at most once, to a usable name.
fn check_renames(c: &ClusterConfig, file: &str) -> Result<(), ConfigError> {
    let mut seen_keys = BTreeSet::new();
    let mut seen_values = BTreeMap::new();
    for (k, v) in &c.rename_commands {
        let field = format!("cluster.{}.rename_commands.{k}", c.name);
        let err = |message: String| ConfigError {
            file: file.to_string(),
            field: field.clone(),
            message,
        };
        let key = k.to_ascii_uppercase();
        if !RENAMEABLE_COMMANDS.contains(&key.as_str()) {
            return Err(err(format!(
                "{k:?} cannot be renamed: only {} (the commands pika-remedy sends) can",
                RENAMEABLE_COMMANDS.join(", ")
            )));
        }
        if !seen_keys.insert(key.clone()) {
            return Err(err(format!(
                "{key} is renamed twice (keys are case-insensitive)"
            )));
        }
        // `rename-command X ""` disables X on the node; pika-remedy cannot work without it.
        if v.is_empty() {
            return Err(err(format!(
                "empty name: that means {key} is disabled on the nodes (rename-command {key} \"\"), \
                 but pika-remedy needs it; give the renamed name instead"
            )));
        }
        if v.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(err(format!(
                "{v:?} must not contain whitespace or control characters"
            )));
        }
        if let Some(other) = seen_values.insert(v.to_ascii_uppercase(), key.clone()) {
            return Err(err(format!(
                "{other} and {key} cannot both be renamed to {v:?}"
            )));
        }
    }
    Ok(())
}

fn check_source(s: &SecretSource, field: &str, file: &str) -> Result<(), ConfigError> {
    match (&s.env, &s.file) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(ConfigError {
            file: file.to_string(),
            field: field.to_string(),
            message: "give exactly one of env = \"VAR\" or file = \"/path\"".into(),
        }),
    }
}
