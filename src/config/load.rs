//! Loading: read the file, parse, validate, resolve the secrets it names.

use std::path::Path;

use super::*;

/// Read a secret from its source. Errors name the field and the env var or file, never the value.
pub fn resolve_secret(
    s: &SecretSource,
    field: &str,
    file: &str,
    base: &Path,
) -> Result<Secret, ConfigError> {
    let err = |message: String| ConfigError {
        file: file.to_string(),
        field: field.to_string(),
        message,
    };
    // An empty secret is a mistake (a file written before its content, a variable exported
    // empty): AUTH with it only fails, or a webhook token would be empty. Omit the setting to
    // mean "none".
    if let Some(var) = &s.env {
        let v = std::env::var(var)
            .map_err(|_| err(format!("environment variable {var} is not set")))?;
        if v.trim().is_empty() {
            return Err(err(format!("environment variable {var} is empty")));
        }
        return Ok(Secret(v));
    }
    if let Some(p) = &s.file {
        let p = if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        };
        let text = std::fs::read_to_string(&p)
            .map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.trim().is_empty() {
            return Err(err(format!("{} is empty", p.display())));
        }
        return Ok(Secret(value.to_string()));
    }
    Err(err("no source".into()))
}

/// Load, parse, validate and resolve secrets.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    let config = Config::parse(&text, &file)?;
    config.validate(&file)?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut cluster_passwords = std::collections::BTreeMap::new();
    for c in &config.clusters {
        if let Some(s) = &c.password {
            let field = format!("cluster.{}.password", c.name);
            cluster_passwords.insert(c.name.clone(), resolve_secret(s, &field, &file, &base)?);
        }
    }
    let opt = |s: &Option<SecretSource>, field: &str| -> Result<Option<Secret>, ConfigError> {
        s.as_ref()
            .map(|s| resolve_secret(s, field, &file, &base))
            .transpose()
    };
    let consul_token = match config.coordinator.kind {
        CoordinatorKind::Consul => {
            opt(&config.coordinator.consul.token, "coordinator.consul.token")?
        }
        _ => None,
    };
    let etcd_password = match config.coordinator.kind {
        CoordinatorKind::Etcd => opt(
            &config.coordinator.etcd.password,
            "coordinator.etcd.password",
        )?,
        _ => None,
    };
    // The notifier resolves its own secrets when `serve` starts; checked here so that
    // `check-config` reports a missing one.
    opt(&config.notify.bearer_token, "notify.bearer_token")?;
    opt(&config.notify.basic_password, "notify.basic_password")?;
    let webhook_bearer = opt(&config.webhook.bearer_token, "webhook.bearer_token")?;
    let webhook_basic_password = opt(&config.webhook.basic_password, "webhook.basic_password")?;
    let read_only_token = opt(&config.webhook.read_only_token, "webhook.read_only_token")?;
    let same_as = |full: &Option<Secret>| matches!((full, &read_only_token), (Some(f), Some(r)) if f.expose() == r.expose());
    if same_as(&webhook_bearer) || same_as(&webhook_basic_password) {
        return Err(ConfigError {
            file: file.clone(),
            field: "webhook.read_only_token".into(),
            message: "must differ from bearer_token and basic_password (it grants less)".into(),
        });
    }
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        cluster_passwords,
        consul_token,
        etcd_password,
        webhook_bearer,
        webhook_basic_password,
        read_only_token,
    })
}
