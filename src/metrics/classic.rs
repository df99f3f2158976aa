//! The classic Prometheus text format 0.0.4, re-encoded from our own OpenMetrics output (see
//! the module docs of [`super`] for why both exist).

use std::collections::HashSet;

/// Rewrite our own OpenMetrics output as classic text: counter families are announced under
/// their sample name (`x_total`), `# UNIT` and `# EOF` are dropped, and OpenMetrics-only types
/// become `untyped`. Only meant for prometheus-client's output (no exemplars, no `_created`).
pub fn openmetrics_to_classic(text: &str) -> String {
    // First pass: which families are counters.
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, t)| *t == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = classic_name(name, &counters);
            out.push_str(&format!("# HELP {name} {help}\n"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let ty = match ty {
                "counter" | "gauge" | "histogram" | "summary" => ty,
                _ => "untyped",
            };
            let name = classic_name(name, &counters);
            out.push_str(&format!("# TYPE {name} {ty}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn classic_name(name: &str, counters: &HashSet<&str>) -> String {
    if counters.contains(name) {
        format!("{name}_total")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_conversion_renames_counters_only() {
        let om = "# HELP p_x Xs.\n# TYPE p_x counter\np_x_total 1\n# HELP p_d_seconds D.\n# TYPE p_d_seconds gauge\n# UNIT p_d_seconds seconds\np_d_seconds 2\n# EOF\n";
        let classic = openmetrics_to_classic(om);
        assert_eq!(
            classic,
            "# HELP p_x_total Xs.\n# TYPE p_x_total counter\np_x_total 1\n# HELP p_d_seconds D.\n# TYPE p_d_seconds gauge\np_d_seconds 2\n"
        );
    }
}
