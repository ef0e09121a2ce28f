//! An offline stand-in for kube-apiserver's validation of a custom resource against its CRD, as
//! on `kubectl apply` (strict field validation): object metadata, pruning of nulls and
//! defaulting, the structural OpenAPI v3 schema, then the CEL rules (`x-kubernetes-validations`,
//! through `kube-cel`, which registers the Kubernetes CEL libraries: `isIP`, `isCIDR`, ...).
//!
//! The structural part is a small recursive validator written for the tests rather than a
//! JSON-Schema crate: a CRD schema is OpenAPI v3 with Kubernetes extensions (`nullable`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`, list types, unknown
//! fields refused rather than allowed, defaults applied before validation) that a JSON-Schema
//! validator would get wrong or need rewritten around it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use regex::Regex;
use serde_json::{Map, Value};

/// One reason the API server would refuse an object: the field path (`spec.retry.maxAge`,
/// `metadata.name`, empty for the root) and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A CRD read from `manifests/crds/`: its kind, `apiVersion` and `openAPIV3Schema`.
pub(crate) struct Crd {
    pub kind: String,
    pub api_version: String,
    pub schema: Value,
}

impl Crd {
    /// Loads the generated CRD file `manifests/crds/<file>`.
    pub(crate) fn load(file: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../manifests/crds")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
        let version = &crd["spec"]["versions"][0];
        Self {
            kind: crd["spec"]["names"]["kind"]
                .as_str()
                .expect("kind")
                .to_owned(),
            api_version: format!(
                "{}/{}",
                crd["spec"]["group"].as_str().expect("group"),
                version["name"].as_str().expect("version")
            ),
            schema: version["schema"]["openAPIV3Schema"].clone(),
        }
    }

    /// Every reason the API server would refuse to create `object`; empty when admitted.
    pub(crate) fn admit(&self, object: &Value) -> Vec<Refusal> {
        let mut out = Vec::new();
        let refuse = |out: &mut Vec<Refusal>, path: &str, message: String| {
            out.push(Refusal {
                path: path.to_owned(),
                message,
            });
        };
        if object["apiVersion"] != self.api_version.as_str() || object["kind"] != self.kind.as_str()
        {
            refuse(
                &mut out,
                "",
                format!("not a {} {}", self.api_version, self.kind),
            );
        }
        check_metadata(&object["metadata"], &mut out);
        let mut object = object.clone();
        default(&self.schema, &mut object);
        check(&self.schema, &object, "", true, &mut out);
        let cel = kube_cel::Validator::new().validate(&self.schema, &object, None);
        for e in cel
            .err()
            .map(kube_cel::ValidationErrors::into_vec)
            .unwrap_or_default()
        {
            let path = e.field_path.trim_start_matches('.').to_owned();
            refuse(&mut out, &path, e.message);
        }
        out
    }
}

const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// ObjectMeta validation of a custom resource: the name is a DNS subdomain, the namespace (when
/// set) a DNS label.
fn check_metadata(meta: &Value, out: &mut Vec<Refusal>) {
    let checks = [("name", DNS_SUBDOMAIN, 253), ("namespace", DNS_LABEL, 63)];
    for (field, pattern, max) in checks {
        let path = format!("metadata.{field}");
        match &meta[field] {
            Value::Null if field == "name" => out.push(Refusal {
                path,
                message: "Required value".into(),
            }),
            Value::Null => {}
            Value::String(s) if s.len() <= max && matches(pattern, s) => {}
            other => out.push(Refusal {
                path,
                message: format!("Invalid value: {other}: a lowercase RFC 1123 name"),
            }),
        }
    }
}

/// Prunes nulls of non-nullable fields and applies `default`s, recursively (the API server does
/// both before validating).
fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let nullable = prop["nullable"] == true;
                    if map.get(name).is_some_and(Value::is_null) && !nullable {
                        map.remove(name);
                    }
                    if !map.contains_key(name)
                        && let Some(d) = prop.get("default")
                    {
                        map.insert(name.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        default(prop, child);
                    }
                }
            }
            if schema["additionalProperties"].is_object() {
                for child in map.values_mut() {
                    default(&schema["additionalProperties"], child);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                default(&schema["items"], item);
            }
        }
        _ => {}
    }
}

/// The structural schema checks of `value` at `path`; `root` skips the implicit `apiVersion`,
/// `kind` and `metadata` of the object root.
fn check(schema: &Value, value: &Value, path: &str, root: bool, out: &mut Vec<Refusal>) {
    let mut refuse = |message: String| {
        out.push(Refusal {
            path: path.to_owned(),
            message,
        });
    };
    if value.is_null() {
        if schema["nullable"] != true {
            refuse("Invalid value: null: must not be null".into());
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let type_ok = match (schema["type"].as_str(), int_or_string) {
        (_, true) => is_integer(value) || value.is_string(),
        (Some("object"), _) => value.is_object(),
        (Some("array"), _) => value.is_array(),
        (Some("string"), _) => value.is_string(),
        (Some("integer"), _) => is_integer(value),
        (Some("number"), _) => value.is_number(),
        (Some("boolean"), _) => value.is_boolean(),
        (None, false) => true,
        (Some(other), _) => panic!("unexpected schema type {other}"),
    };
    if !type_ok {
        let expected = schema["type"].as_str().unwrap_or("integer or string");
        return refuse(format!(
            "Invalid value: {value}: must be of type {expected}"
        ));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        refuse(format!(
            "Unsupported value: {value}: supported values: {}",
            join(allowed)
        ));
    }
    match value {
        Value::String(s) => check_string(schema, s, &mut refuse),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(f64::NAN), &mut refuse),
        Value::Array(items) => {
            check_array(schema, items, &mut refuse);
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), false, out);
            }
        }
        Value::Object(map) => check_object(schema, map, path, root, out),
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, refuse: &mut impl FnMut(String)) {
    let len = s.chars().count() as u64;
    if schema["minLength"].as_u64().is_some_and(|min| len < min) {
        refuse(format!(
            "Invalid value: {s:?}: should be at least {} chars long",
            schema["minLength"]
        ));
    }
    if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
        refuse(format!(
            "Too long: may not be more than {} bytes",
            schema["maxLength"]
        ));
    }
    if let Some(pattern) = schema["pattern"].as_str()
        && !matches(pattern, s)
    {
        refuse(format!("Invalid value: {s:?}: should match '{pattern}'"));
    }
}

fn check_number(schema: &Value, n: f64, refuse: &mut impl FnMut(String)) {
    if let Some(min) = schema["minimum"].as_f64()
        && n < min
    {
        refuse(format!(
            "Invalid value: {n}: should be greater than or equal to {min}"
        ));
    }
    if let Some(max) = schema["maximum"].as_f64()
        && n > max
    {
        refuse(format!(
            "Invalid value: {n}: should be less than or equal to {max}"
        ));
    }
}

fn check_array(schema: &Value, items: &[Value], refuse: &mut impl FnMut(String)) {
    let len = items.len() as u64;
    if schema["minItems"].as_u64().is_some_and(|min| len < min) {
        refuse(format!("should have at least {} items", schema["minItems"]));
    }
    if schema["maxItems"].as_u64().is_some_and(|max| len > max) {
        refuse(format!(
            "Too many: {len}: must have at most {} items",
            schema["maxItems"]
        ));
    }
    let keys: Option<Vec<String>> = match schema["x-kubernetes-list-type"].as_str() {
        Some("set") => Some(items.iter().map(Value::to_string).collect()),
        Some("map") => {
            let key_names = schema["x-kubernetes-list-map-keys"].as_array();
            let key = |item: &Value| {
                let parts: Vec<_> = key_names
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|k| item[k].to_string())
                    .collect();
                parts.join(",")
            };
            Some(items.iter().map(key).collect())
        }
        _ => None,
    };
    if let Some(keys) = keys {
        let mut seen = BTreeSet::new();
        for k in keys {
            if !seen.insert(k.clone()) {
                refuse(format!("Duplicate value: {k}"));
            }
        }
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    out: &mut Vec<Refusal>,
) {
    let child_path = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if !map.contains_key(name) {
            out.push(Refusal {
                path: child_path(name),
                message: "Required value".into(),
            });
        }
    }
    let props = schema["properties"].as_object();
    let additional = &schema["additionalProperties"];
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    for (name, child) in map {
        if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(prop) = props.and_then(|p| p.get(name)) {
            check(prop, child, &child_path(name), false, out);
        } else if additional.is_object() {
            check(additional, child, &child_path(name), false, out);
        } else if !(preserve || *additional == true) {
            // Strict field validation (kubectl's default): unknown fields are refused.
            out.push(Refusal {
                path: child_path(name),
                message: format!("unknown field \"{}\"", child_path(name)),
            });
        }
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern)
        .unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"))
        .is_match(text)
}

fn join(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
