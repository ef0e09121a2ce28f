//! Schema building blocks of the CRD types: the patterns the API server checks (durations,
//! byte sizes, resource quantities, DNS names, host names), the `schema_with` helpers and the
//! `transform`s that make the generated OpenAPI schema refuse what the compiler would refuse.
//!
//! Every pattern here admits only text the compiler accepts (`units.rs`, the compiler's own
//! checks): the API server refuses at `kubectl apply` what the operator would otherwise report
//! later in the object's status. Patterns use `[.]` rather than `\.` so they can be embedded in
//! CEL string literals unchanged.

use schemars::Schema;
use serde_json::{Map, Value, json};

/// A duration as `units::parse_duration` (humantime) reads it: one or more `<number><unit>`
/// terms, optionally separated by spaces (`30s`, `1h30m`, `1h 30m`, `1.5h`, `5d`, `2w`).
pub(crate) const DURATION_PATTERN: &str = concat!(
    "^(([0-9]+ *(nanos|nsec|ns)",
    "|[0-9]+([.][0-9]+)? *(usec|us|millis|msec|ms|seconds|second|secs|sec|s",
    "|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w",
    "|months|month|M|years|year|yrs|yr|y)) *)+$"
);

/// A non-negative byte size as `units::parse_size` reads it: a plain number (`1048576`), a
/// binary (`Ki` … `Ei`) or decimal (`k` … `E`) suffix, or a decimal exponent (`1e6`).
pub(crate) const SIZE_PATTERN: &str =
    r"^[+]?(([0-9]+([.][0-9]*)?)|([.][0-9]+))(([KMGTPE]i)|[kMGTPE]|([eE][+]?[0-9]+))?$";

/// A non-negative Kubernetes resource quantity (`100m`, `128Mi`, `0.5`, `1e3`): the
/// `resource.Quantity` grammar without a minus sign (the API server refuses negative requests).
pub(crate) const RESOURCE_QUANTITY_PATTERN: &str = r"^[+]?(([0-9]+([.][0-9]*)?)|([.][0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+([.][0-9]*)?)|([.][0-9]+))))?$";

/// A DNS-1123 subdomain (Secret and SendingPool names): lower-case labels joined by dots.
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 label (namespaces): lower-case letters, digits and `-`, at most 63.
pub(crate) const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A host name (RFC 1123: letters, digits and `-` per label, any case; an IPv4 address also
/// matches). A trailing dot is allowed.
pub(crate) const HOST_NAME_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*[.]?$";

/// A host name announced in EHLO: [`HOST_NAME_PATTERN`] without the trailing dot.
/// A fully qualified domain name: like [`EHLO_NAME_PATTERN`], with at least two labels.
pub(crate) const FQDN_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)+[.]?$";

pub(crate) const EHLO_NAME_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";

/// A Kubernetes label value (node selector values): at most 63 characters, alphanumeric at
/// both ends, `-`, `_` and `.` inside; may be empty.
pub(crate) const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Replaces the unsigned-integer formats schemars emits (`uint8`, `uint16`, `uint32`, `uint64`),
/// which the API server does not recognise (and so does not enforce, and warns about), by
/// explicit `minimum`/`maximum` bounds, everywhere under `schema`.
pub(crate) fn unsigned_bounds(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        unsigned_bounds_in(obj);
    }
}

fn unsigned_bounds_in(obj: &mut Map<String, Value>) {
    let max = match obj.get("format").and_then(Value::as_str) {
        Some("uint8") => Some(u64::from(u8::MAX)),
        Some("uint16") => Some(u64::from(u16::MAX)),
        Some("uint32") => Some(u64::from(u32::MAX)),
        // The API server holds integers as int64.
        Some("uint64" | "uint") => Some(i64::MAX.unsigned_abs()),
        _ => None,
    };
    if let Some(max) = max {
        obj.remove("format");
        let min = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
        obj.insert("minimum".into(), json!(min.max(0.0)));
        let upper = obj
            .get("maximum")
            .and_then(Value::as_f64)
            .map_or(max as f64, |m| m.min(max as f64));
        obj.insert("maximum".into(), json!(upper));
    }
    for value in obj.values_mut() {
        match value {
            Value::Object(child) => unsigned_bounds_in(child),
            Value::Array(items) => {
                for child in items.iter_mut().filter_map(Value::as_object_mut) {
                    unsigned_bounds_in(child);
                }
            }
            _ => {}
        }
    }
}

/// Tolerations: `operator` and `effect` restricted to the values Pod validation accepts (empty
/// means `Equal`, respectively every effect).
pub(crate) fn toleration_enums(schema: &mut Schema) {
    let Some(props) = schema
        .as_object_mut()
        .and_then(|s| s.get_mut("items"))
        .and_then(|i| i.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let enums = [
        ("operator", json!(["", "Equal", "Exists"])),
        (
            "effect",
            json!(["", "NoSchedule", "PreferNoSchedule", "NoExecute"]),
        ),
    ];
    for (field, values) in enums {
        if let Some(p) = props.get_mut(field).and_then(Value::as_object_mut) {
            p.insert("enum".into(), values);
        }
    }
}

/// Resource requirements: `requests` and `limits` values must be non-negative quantities.
pub(crate) fn resource_quantities(schema: &mut Schema) {
    let Some(props) = schema
        .as_object_mut()
        .and_then(|s| s.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for field in ["requests", "limits"] {
        if let Some(q) = props
            .get_mut(field)
            .and_then(|f| f.get_mut("additionalProperties"))
            .and_then(Value::as_object_mut)
        {
            q.insert("pattern".into(), json!(RESOURCE_QUANTITY_PATTERN));
            q.insert("minimum".into(), json!(0.0));
        }
    }
}

/// Node selector: values must be label values.
pub(crate) fn label_values(schema: &mut Schema) {
    if let Some(v) = schema
        .as_object_mut()
        .and_then(|s| s.get_mut("additionalProperties"))
        .and_then(Value::as_object_mut)
    {
        v.insert("pattern".into(), json!(LABEL_VALUE_PATTERN));
        v.insert("maxLength".into(), json!(63));
    }
}

/// Schema of a byte size: an integer (at least 0) or a string matching [`SIZE_PATTERN`],
/// explicitly not nullable (kube marks optional int-or-string fields nullable): omit the field
/// rather than setting it to null.
pub(crate) fn size_quantity_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "pattern": SIZE_PATTERN,
        "minimum": 0,
        "x-kubernetes-int-or-string": true,
        "nullable": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_formats_become_bounds() {
        let mut schema = schemars::json_schema!({
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 1},
                "b": {"type": "integer", "format": "uint16", "minimum": 1, "maximum": 1000},
                "c": {"items": {"type": "integer", "format": "uint8"}},
                "d": {"type": "integer", "format": "int32"},
            }
        });
        unsigned_bounds(&mut schema);
        let v = schema.as_value();
        assert_eq!(
            v["properties"]["a"],
            json!({"type": "integer", "minimum": 1.0, "maximum": 4_294_967_295.0})
        );
        assert_eq!(
            v["properties"]["b"],
            json!({"type": "integer", "minimum": 1.0, "maximum": 1000.0})
        );
        assert_eq!(
            v["properties"]["c"]["items"],
            json!({"type": "integer", "minimum": 0.0, "maximum": 255.0})
        );
        assert_eq!(v["properties"]["d"]["format"], "int32");
    }
}
