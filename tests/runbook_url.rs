//! `runbook_url` as a real Prometheus renders it when the operator sets the one base URL
//! (external label `runbook_base_url`; promtool 2.42's unit tests cannot set external labels,
//! so rules/*_test.yml only pin the default). Every alert's annotation template from
//! rules/*.yml is evaluated on an always-firing copy of the alert.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::prom::get;
use support::redis::{free_port, require_binary};

const BASE: &str = "https://runbooks.test/ops/pika";

/// (alert, runbook_url template) of every alert in the shipped rule files.
fn shipped() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in ["rules/pika-remedy.yml", "rules/pika-exporter.yml"] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f))
                .expect("rules");
        let mut name = None;
        for l in text.lines().map(str::trim) {
            if let Some(n) = l.strip_prefix("- alert:") {
                name = Some(n.trim().to_string());
            } else if let Some(u) = l.strip_prefix("runbook_url:") {
                let n = name.take().expect("runbook_url after alert");
                out.push((n, u.trim().trim_matches('\'').to_string()));
            }
        }
    }
    assert!(out.len() >= 7, "{out:?}");
    out
}

#[test]
fn runbook_url_uses_the_operator_base_url() {
    let bin = require_binary("prometheus", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: runbook-url\n    rules:\n");
    for (i, (alert, url)) in shipped().iter().enumerate() {
        rules.push_str(&format!(
            "      - alert: {alert}\n        expr: vector(1)\n        labels: {{copy: \"{i}\"}}\n        annotations:\n          runbook_url: '{url}'\n"
        ));
    }
    std::fs::write(dir.path().join("rules.yml"), rules).expect("rules");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels:\n    runbook_base_url: {BASE}\nrule_files:\n  - {}\n",
            dir.path().join("rules.yml").display()
        ),
    )
    .expect("config");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let mut child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn prometheus");
    let want = shipped();
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        let got: Vec<(String, String)> = get(port, "/api/v1/alerts")
            .ok()
            .and_then(|r| r.json().ok())
            .map(|v| {
                v["data"]["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        (
                            a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                            a["annotations"]["runbook_url"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if got.len() == want.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(result.len(), want.len(), "alerts: {result:?}");
    for (alert, url) in result {
        assert_eq!(url, format!("{BASE}/{alert}.md"), "{alert}");
    }
}
