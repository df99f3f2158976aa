//! The webhook body: parse, classify, and the label helpers on every label value.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use pika_remedy::alert;
use pika_remedy::config::WebhookConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = alert::parse(data) else { return };
    assert_eq!(p.version, "4");
    let known: BTreeSet<String> = ["main".to_string()].into();
    let c = alert::classify(&p, &WebhookConfig::default(), &known);
    let n: usize = c.work.values().map(|w| w.alerts.len()).sum();
    assert_eq!(n + c.not_acted.len(), p.alerts.len());
    for a in &p.alerts {
        for v in a.labels.values() {
            if let Some(addr) = alert::parse_instance(v) {
                assert_eq!(alert::parse_instance(&addr.to_string()), Some(addr));
            }
            let r = alert::redact_label(v);
            assert_eq!(alert::redact_label(&r), r);
        }
    }
});
