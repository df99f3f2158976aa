//! A small validator for `docs/json-schema.json` (the subset it uses: `$ref` to `#/$defs/…`,
//! `type` (one or several), `required`, `properties`, `items`, `enum`, `oneOf`, `pattern` for
//! the schema's own patterns). Unknown keywords or patterns panic, so nothing is skipped
//! silently. Every output is also checked for Rust enum shapes (`"Ok"`/`"Err"` keys).

use serde_json::Value;

pub fn schema() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-schema.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("docs/json-schema.json is JSON")
}

/// Panics with every violation of `def` (a name under `$defs`) found in `v`.
pub fn assert_valid(def: &str, v: &Value) {
    let root = schema();
    let node = root["$defs"]
        .get(def)
        .unwrap_or_else(|| panic!("no $defs/{def} in the schema"));
    let mut errors = Vec::new();
    check(&root, node, v, "$", &mut errors);
    no_rust_shapes(v, "$", &mut errors);
    assert!(errors.is_empty(), "{def}: {errors:#?}\nvalue: {v:#}");
}

fn no_rust_shapes(v: &Value, at: &str, errors: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "Ok" || k == "Err" {
                    errors.push(format!("{at}: Rust enum shape {k:?}"));
                }
                no_rust_shapes(x, &format!("{at}.{k}"), errors);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                no_rust_shapes(x, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("schema type {other:?} not supported by the test validator"),
    }
}

fn pattern_ok(pattern: &str, s: &str) -> bool {
    if pattern.starts_with("^[0-9]{4}-") {
        return s.ends_with('Z') && pika_remedy::controls::parse_rfc3339(s).is_ok();
    }
    if pattern == "^[^\\s]+:[0-9]+$" {
        return s.parse::<pika_remedy::model::Addr>().is_ok();
    }
    if pattern == "^[0-9a-f]{16}-[0-9]+$" {
        return s.split_once('-').is_some_and(|(a, b)| {
            a.len() == 16
                && a.chars().all(|c| c.is_ascii_hexdigit())
                && !b.is_empty()
                && b.chars().all(|c| c.is_ascii_digit())
        });
    }
    panic!("pattern {pattern:?} not supported by the test validator")
}

fn check(root: &Value, node: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        panic!("schema node at {at} is not an object");
    };
    for (k, x) in obj {
        match k.as_str() {
            "$ref" => {
                let name = x
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .unwrap_or_else(|| panic!("unsupported $ref {x}"));
                check(root, &root["$defs"][name], v, at, errors);
            }
            "type" => {
                let ok = match x {
                    Value::String(t) => type_ok(t, v),
                    Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)),
                    _ => panic!("bad type {x}"),
                };
                if !ok {
                    errors.push(format!("{at}: expected type {x}, got {v}"));
                }
            }
            "required" => {
                for r in x.as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    if v.as_object().is_some_and(|m| !m.contains_key(r)) {
                        errors.push(format!("{at}: missing required {r:?}"));
                    }
                }
            }
            "properties" => {
                if let (Some(props), Some(m)) = (x.as_object(), v.as_object()) {
                    for (name, sub) in props {
                        if let Some(val) = m.get(name) {
                            check(root, sub, val, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    check(root, x, item, &format!("{at}[{i}]"), errors);
                }
            }
            "enum" => {
                if !x.as_array().is_some_and(|a| a.contains(v)) {
                    errors.push(format!("{at}: {v} not one of {x}"));
                }
            }
            "oneOf" => {
                let matching = x
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|alt| {
                        let mut e = Vec::new();
                        check(root, alt, v, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if matching != 1 {
                    errors.push(format!(
                        "{at}: {matching} of the oneOf alternatives match {v}"
                    ));
                }
            }
            "pattern" => {
                if let Some(s) = v.as_str() {
                    if !pattern_ok(x.as_str().unwrap_or_default(), s) {
                        errors.push(format!("{at}: {s:?} does not match {x}"));
                    }
                }
            }
            "description" | "title" | "$schema" | "$id" => {}
            other => panic!("schema keyword {other:?} not supported by the test validator"),
        }
    }
}
