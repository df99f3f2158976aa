//! Static checks on what we ship: every alert has its runbook, `runbook_url` is built from the
//! one operator-set base, no placeholder links, the default port. The built artifacts (Debian
//! package, release tarball, Dockerfile replay) are checked by `make dist-check` (see the
//! Makefile), which `make test` runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Rule files we ship (not the promtool unit tests).
fn rule_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("rules"))
        .expect("rules/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".yml") && !n.ends_with("_test.yml")
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 2,
        "expected rules/pika-remedy.yml and rules/pika-exporter.yml"
    );
    v
}

/// (alert name, runbook_url) for every alerting rule, in file order.
fn alerts(file: &Path) -> Vec<(String, String)> {
    let text = read(file);
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push((name.trim().to_string(), None));
        } else if let Some(url) = t.strip_prefix("runbook_url:") {
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("{}: runbook_url before any alert", file.display()));
            assert!(
                last.1.is_none(),
                "{}: two runbook_url in {}",
                file.display(),
                last.0
            );
            last.1 = Some(url.trim().trim_matches(['\'', '"']).to_string());
        }
    }
    out.into_iter()
        .map(|(n, u)| {
            let u = u.unwrap_or_else(|| panic!("{}: alert {n} has no runbook_url", file.display()));
            (n, u)
        })
        .collect()
}

fn expected_url(alert: &str) -> String {
    format!(
        "{{{{ with $externalLabels.runbook_base_url }}}}{{{{ . }}}}{{{{ else }}}}docs/runbooks{{{{ end }}}}/{alert}.md"
    )
}

#[test]
fn every_shipped_alert_has_its_runbook_and_every_runbook_an_alert() {
    let dir = root().join("docs/runbooks");
    let mut names = BTreeSet::new();
    for f in rule_files() {
        let list = alerts(&f);
        assert!(!list.is_empty(), "{}: no alerts", f.display());
        for (alert, url) in list {
            assert_eq!(
                url,
                expected_url(&alert),
                "{}: runbook_url of {alert} must be built from runbook_base_url",
                f.display()
            );
            let page = dir.join(format!("{alert}.md"));
            assert!(page.is_file(), "alert {alert} has no {}", page.display());
            let text = read(&page);
            assert!(
                text.starts_with(&format!("# {alert}\n")),
                "{}: title",
                page.display()
            );
            for section in [
                "## What it means",
                "## What pika-remedy already did",
                "## What to check",
                "## How to fix",
            ] {
                assert!(
                    text.contains(section),
                    "{}: missing {section:?}",
                    page.display()
                );
            }
            assert!(
                text.contains("```sh"),
                "{}: no commands to check",
                page.display()
            );
            names.insert(alert);
        }
    }
    let index = read(&dir.join("README.md"));
    for entry in std::fs::read_dir(&dir).expect("docs/runbooks") {
        let p = entry.expect("entry").path();
        let file = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if file == "README.md" {
            continue;
        }
        let stem = file
            .strip_suffix(".md")
            .expect("only .md files in docs/runbooks");
        assert!(
            names.contains(stem),
            "{file}: no shipped alert of that name"
        );
        assert!(
            index.contains(&format!("({file})")),
            "README.md does not link {file}"
        );
    }
}

#[test]
fn promtool_tests_assert_the_default_runbook_url() {
    // The unit tests in rules/*_test.yml pin the annotation as Prometheus renders it without
    // the external label: the repository path.
    for f in ["rules/pika-remedy_test.yml", "rules/pika-exporter_test.yml"] {
        let text = read(&root().join(f));
        let urls: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
            .map(|u| u.trim().trim_matches('"'))
            .collect();
        assert!(!urls.is_empty(), "{f}: no runbook_url asserted");
        for u in urls {
            let alert = u
                .strip_prefix("docs/runbooks/")
                .and_then(|s| s.strip_suffix(".md"))
                .unwrap_or_else(|| panic!("{f}: unexpected runbook_url {u}"));
            assert!(
                root().join(u).is_file(),
                "{f}: {u} does not exist ({alert})"
            );
        }
    }
}

/// Every text file under `dir` (not .git, not target, not symlinks).
fn repo_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let p = entry.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        if meta.file_type().is_symlink() {
            continue; // e.g. deploy/compose/rules -> ../../rules: walked once, at its target
        }
        if meta.is_dir() {
            if name == ".git" || name == "target" || name == "dist" {
                continue;
            }
            repo_files(&p, out);
        } else if let Ok(text) = std::fs::read(&p) {
            if !text.contains(&0) {
                out.push(p);
            }
        }
    }
}

#[test]
fn no_placeholder_links_anywhere() {
    // Spelled in two halves so this file does not match itself.
    let needles = [
        format!("{}{}", "OWN", "ER/"),
        format!("{}{}", "github.com/OWN", "ER"),
        format!("{}{}", "example.com/", "runbook"),
    ];
    let mut files = Vec::new();
    repo_files(&root(), &mut files);
    assert!(files.len() > 50, "walked only {} files", files.len());
    let mut hits = Vec::new();
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).expect("read")).into_owned();
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                hits.push(format!("{}:{}: {line}", f.display(), i + 1));
            }
        }
    }
    assert!(hits.is_empty(), "placeholder links:\n{}", hits.join("\n"));
}

#[test]
fn default_port_is_9655_everywhere_we_ship() {
    let cfg = pika_remedy::config::ServiceConfig::default();
    assert_eq!(cfg.listen.port(), 9655);
    // 9121 is redis_exporter's and pika_exporter's port: only the pika_exporter scrape example
    // in rules/pika-exporter.yml may name it.
    let mut files = Vec::new();
    for d in ["deploy", "alerts", "docs"] {
        repo_files(&root().join(d), &mut files);
    }
    files.push(root().join("rules/pika-remedy.yml"));
    files.push(root().join("rules/pika-remedy_test.yml"));
    for f in files {
        let text = read(&f);
        assert!(
            !text.contains("9121"),
            "{} still names port 9121",
            f.display()
        );
    }
    let example = read(&root().join("deploy/pika-remedy.example.toml"));
    assert!(example.contains(":9655"), "example config: port");
}

fn k8s(file: &str) -> String {
    read(&root().join("deploy/kubernetes").join(file))
}

#[test]
fn kubernetes_manifests_are_consistent() {
    // Schemas are checked by kubernetes-validate in `make dist-check`; this is what a schema
    // cannot say.
    let kust = k8s("kustomization.yaml");
    let resources: Vec<&str> = kust
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .collect();
    for r in &resources {
        let text = k8s(r);
        assert!(
            !text.contains("kind: Secret"),
            "{r}: `kubectl apply -k` would overwrite the real Secret"
        );
    }
    for want in [
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "poddisruptionbudget.yaml",
    ] {
        assert!(resources.contains(&want), "kustomization.yaml lacks {want}");
    }
    assert!(
        !resources.iter().any(|r| r.contains("secret")),
        "{resources:?}"
    );

    let dep = k8s("deployment.yaml");
    let cm = k8s("configmap.yaml");
    assert!(dep.contains("  replicas: 2\n"), "two replicas");
    assert!(
        cm.contains("kind = \"etcd\"") || cm.contains("kind = \"consul\""),
        "two replicas need a shared coordinator (etcd or Consul)"
    );
    assert!(dep.contains("path: /readyz"), "readiness on /readyz");
    assert!(dep.contains("path: /healthz"), "liveness on /healthz");
    assert!(dep.contains("runAsNonRoot: true"));
    assert!(dep.contains("containerPort: 9655"));
    assert!(dep.contains("secretName: pika-remedy"));
    assert!(cm.contains("listen = \"0.0.0.0:9655\""));
    assert!(k8s("service.yaml").contains("port: 9655"));

    let pdb = k8s("poddisruptionbudget.yaml");
    assert!(pdb.contains("kind: PodDisruptionBudget") && pdb.contains("minAvailable: 1"));

    let sm = k8s("prometheus-operator/servicemonitor.yaml");
    for want in [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: ServiceMonitor",
        "matchLabels: {app.kubernetes.io/name: pika-remedy}",
        "port: http",
        "honorLabels: true",
        "jobLabel: app.kubernetes.io/name",
    ] {
        assert!(sm.contains(want), "servicemonitor.yaml lacks {want:?}");
    }
    let op = k8s("prometheus-operator/kustomization.yaml");
    assert!(op.contains("  - ../\n") && op.contains("  - servicemonitor.yaml\n"));
    // The Service's port name is the one the ServiceMonitor scrapes, and the job label is the
    // one the rules select.
    assert!(k8s("service.yaml").contains("name: http"));
    assert!(read(&root().join("rules/pika-remedy.yml")).contains("up{job=\"pika-remedy\"}"));
}

#[test]
fn kubernetes_configmap_config_is_valid() {
    // The TOML embedded in configmap.yaml, with its secret files provided, passes validation.
    let cm = k8s("configmap.yaml");
    let start = cm.find("pika-remedy.toml: |\n").expect("embedded config") + 20;
    let toml: String = cm[start..]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["webhook-token", "main-password"] {
        std::fs::write(tmp.path().join(f), "k8s-test-secret\n").expect("secret");
    }
    let dir = format!("{}/", tmp.path().display());
    let path = tmp.path().join("pika-remedy.toml");
    std::fs::write(&path, toml.replace("/etc/pika-remedy/secrets/", &dir)).expect("write");
    let loaded = pika_remedy::config::load(&path);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

/// Every test file has exactly one tier in tests/README.md (which `make test-<tier>` reads),
/// and the table names no file that is gone.
#[test]
fn every_test_file_has_one_tier() {
    let table = read(&root().join("tests/README.md"));
    let mut listed = Vec::new();
    for line in table.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, file, tier, ..] = cells.as_slice() {
            if let Some(name) = file.strip_prefix('`').and_then(|f| f.strip_suffix(".rs`")) {
                assert!(
                    ["pure", "fakes", "real"].contains(tier),
                    "tests/README.md: {name} has tier {tier:?}, not pure|fakes|real"
                );
                listed.push(name.to_string());
            }
        }
    }
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a file is listed twice: {listed:?}"
    );
    let files: BTreeSet<String> = std::fs::read_dir(root().join("tests"))
        .expect("tests dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    assert_eq!(
        unique, files,
        "tests/README.md's tiers vs the files in tests/"
    );
}
