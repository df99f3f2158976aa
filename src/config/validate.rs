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

    /// Check everything that serde cannot: names, duplicates, timing rules. Every error is
    /// reported, not only the first: see [`ConfigError::all`].
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        ConfigError::all(self.validate_all(file))
    }

    /// What only `serve` needs: `[webhook]` authentication (or `allow_unauthenticated`).
    /// `status`, `plan`, `check-config` and the operator commands run without it.
    pub fn check_serve(&self, file: &str) -> Result<(), ConfigError> {
        let w = &self.webhook;
        if w.bearer_token.is_none() && w.basic_user.is_none() && !w.allow_unauthenticated {
            return Err(ConfigError {
                file: file.to_string(),
                field: "webhook".into(),
                message: "serve needs authentication: set bearer_token or basic_user/basic_password, or allow_unauthenticated = true".into(),
            });
        }
        Ok(())
    }

    /// Every error of the checks serde cannot do, in file order of the sections.
    pub fn validate_all(&self, file: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        self.validate_clusters(file, &mut errs);
        self.validate_service(file, &mut errs);
        self.validate_policy(file, &mut errs);
        self.validate_coordinator(file, &mut errs);
        errs.extend(self.validate_scale_out(file).err());
        self.validate_webhook(file, &mut errs);
        errs
    }

    /// `service.scale_out` / `service.member_ttl`: a TTL the backend accepts and not above the
    /// lock TTL (a dead instance's share must move within one lock TTL).
    fn validate_scale_out(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, message: String| ConfigError {
            file: file.to_string(),
            field: field.to_string(),
            message,
        };
        let ttl = self.member_ttl();
        let min = match self.coordinator.kind {
            // The member session TTL: Consul accepts 10 s to 24 h.
            CoordinatorKind::Consul => Duration::from_secs(10),
            // etcd counts lease TTLs in whole seconds (and raises tiny ones to its minimum).
            CoordinatorKind::Etcd => Duration::from_secs(2),
            CoordinatorKind::Local => Duration::from_secs(1),
        };
        if ttl < min {
            return Err(err(
                "service.member_ttl",
                format!(
                    "{} is below the {} coordinator's minimum {}",
                    humantime::format_duration(ttl),
                    self.coordinator.kind.as_str(),
                    humantime::format_duration(min)
                ),
            ));
        }
        if ttl > self.policy.lock_ttl {
            return Err(err(
                "service.member_ttl",
                format!(
                    "{} exceeds policy.lock_ttl {}: a dead instance's clusters must move within one lock TTL",
                    humantime::format_duration(ttl),
                    humantime::format_duration(self.policy.lock_ttl)
                ),
            ));
        }
        if self.service.scale_out {
            if let Some(id) = &self.service.instance_id {
                if let Err(e) = crate::coord::check_member_id(id) {
                    return Err(err("service.instance_id", e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// `[[cluster]]`: names, nodes, passwords, renamed commands.
    fn validate_clusters(&self, file: &str, errs: &mut Vec<ConfigError>) {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        if self.clusters.is_empty() {
            errs.push(err(
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
                errs.push(err(
                    format!("{at}.name"),
                    format!("{:?} must be non-empty and use only [A-Za-z0-9._-]", c.name),
                ));
            }
            if !names.insert(c.name.clone()) {
                errs.push(err(
                    format!("{at}.name"),
                    format!("duplicate cluster name {:?}", c.name),
                ));
            }
            if c.nodes.len() < 2 {
                errs.push(err(
                    format!("cluster.{}.nodes", c.name),
                    "a cluster needs at least 2 nodes (a master and a replica)".into(),
                ));
            }
            let mut addrs = BTreeSet::new();
            for (j, n) in c.nodes.iter().enumerate() {
                if !addrs.insert(n.addr.clone()) {
                    errs.push(err(
                        format!("cluster.{}.nodes[{j}].addr", c.name),
                        format!("duplicate node {}", n.addr),
                    ));
                }
            }
            if let Some(p) = &c.password {
                errs.extend(check_source(p, &format!("cluster.{}.password", c.name), file).err());
            }
            errs.extend(check_renames(c, file).err());
        }
    }

    /// `[service]` and `[timeouts]`.
    fn validate_service(&self, file: &str, errs: &mut Vec<ConfigError>) {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let sv = &self.service;
        if sv.events_file_max_bytes < crate::service::events::MIN_FILE_MAX_BYTES {
            errs.push(err(
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
                errs.push(err(name.into(), "must be > 0".into()));
            }
        }
        if sv.max_connections == 0 {
            errs.push(err(
                "service.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if sv.events_file_keep < 2 {
            errs.push(err(
                "service.events_file_keep".into(),
                "must be at least 2 (the current file and one rotated file)".into(),
            ));
        }
        let t = &self.timeouts;
        if t.connect.is_zero() || t.command.is_zero() {
            errs.push(err(
                "timeouts".into(),
                "connect and command timeouts must be > 0".into(),
            ));
        }
    }

    /// `[policy]`: timeouts, and a lock TTL above the worst-case action.
    fn validate_policy(&self, file: &str, errs: &mut Vec<ConfigError>) {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let (p, t) = (&self.policy, &self.timeouts);
        if p.min_observed == 0 {
            errs.push(err(
                "policy.min_observed".into(),
                "must be at least 1".into(),
            ));
        }
        if p.max_parallel_full_syncs == 0 {
            errs.push(err(
                "policy.max_parallel_full_syncs".into(),
                "must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("policy.full_sync_timeout", p.full_sync_timeout),
            ("policy.promote_timeout", p.promote_timeout),
            ("policy.link_timeout", p.link_timeout),
            ("policy.lock_ttl", p.lock_ttl),
            ("policy.snapshot_timeout", p.snapshot_timeout),
        ] {
            if d.is_zero() {
                errs.push(err(name.into(), "must be > 0".into()));
            }
        }
        let worst = p.worst_case_action(t);
        if p.lock_ttl <= worst {
            errs.push(err(
                "policy.lock_ttl".into(),
                format!(
                    "{} must exceed the worst-case action time {} \
                     (confirm_window + the longest step: detach_timeout + 2×link_timeout, + 6 command round trips)",
                    humantime::format_duration(p.lock_ttl),
                    humantime::format_duration(worst),
                ),
            ));
        }
    }

    /// `[coordinator]` of the configured kind.
    fn validate_coordinator(&self, file: &str, errs: &mut Vec<ConfigError>) {
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
                    errs.push(err(
                        "coordinator.consul.address".into(),
                        format!("{:?} must start with http:// or https://", c.address),
                    ));
                }
                // The lock TTL is Consul's session TTL: Consul accepts 10 s to 24 h.
                if p.lock_ttl < Duration::from_secs(10) || p.lock_ttl > Duration::from_secs(86400) {
                    errs.push(err(
                        "policy.lock_ttl".into(),
                        "with the consul coordinator it is the session TTL: Consul accepts 10s to 24h".into(),
                    ));
                }
                if c.lock_delay > Duration::from_secs(60) {
                    errs.push(err(
                        "coordinator.consul.lock_delay".into(),
                        "Consul accepts 0 to 60s".into(),
                    ));
                }
                if c.prefix.is_empty() || c.prefix.starts_with('/') {
                    errs.push(err(
                        "coordinator.consul.prefix".into(),
                        "must be non-empty and must not start with '/'".into(),
                    ));
                }
                if let Some(s) = &c.token {
                    errs.extend(check_source(s, "coordinator.consul.token", file).err());
                }
            }
            CoordinatorKind::Etcd => {
                let e = &self.coordinator.etcd;
                if e.endpoints.is_empty() {
                    errs.push(err(
                        "coordinator.etcd.endpoints".into(),
                        "at least one endpoint".into(),
                    ));
                }
                if let Some(s) = &e.password {
                    errs.extend(check_source(s, "coordinator.etcd.password", file).err());
                }
                if e.password.is_some() != e.user.is_some() {
                    errs.push(err(
                        "coordinator.etcd.user".into(),
                        "user and password go together".into(),
                    ));
                }
            }
        }
    }

    /// `[webhook]`: authentication and bounds.
    fn validate_webhook(&self, file: &str, errs: &mut Vec<ConfigError>) {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        errs.extend(self.notify.validate(file).err());
        errs.extend(self.hooks.validate(self, file).err());
        let w = &self.webhook;
        if let Some(s) = &w.bearer_token {
            errs.extend(check_source(s, "webhook.bearer_token", file).err());
        }
        if let Some(s) = &w.basic_password {
            errs.extend(check_source(s, "webhook.basic_password", file).err());
        }
        if let Some(s) = &w.read_only_token {
            errs.extend(check_source(s, "webhook.read_only_token", file).err());
        }
        if w.basic_user.is_some() != w.basic_password.is_some() {
            errs.push(err(
                "webhook.basic_user".into(),
                "basic_user and basic_password go together".into(),
            ));
        }
        if w.reply_within.is_zero() {
            errs.push(err(
                "webhook.reply_within".into(),
                "must be > 0 (and below Alertmanager's notification timeout, 10s by default)"
                    .into(),
            ));
        }
        if w.max_body_bytes < 1024 {
            errs.push(err(
                "webhook.max_body_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
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
