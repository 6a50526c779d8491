//! How answers are shown: aligned tables and `key: value` lines for people, the
//! API's JSON for scripts.

use serde_json::Value;

/// Columns of `connections list`: header and the field each shows.
const LIST_COLUMNS: [(&str, &str); 7] = [
    ("CONNECTION", "connection_id"),
    ("PRODUCT", "product"),
    ("STATUS", "status"),
    ("REASON", "status_reason"),
    ("ACCESS EXPIRES", "access_token_expires_at"),
    ("REFRESH TOKEN DIES", "refresh_token_dies_at"),
    ("FAILURES", "consecutive_failures"),
];

/// The default tenant's connections carry no `tenant` field.
fn column(connection: &Value, field: &str) -> String {
    match (field, &connection[field]) {
        ("tenant", Value::Null) => "default".to_owned(),
        (_, value) => cell(value),
    }
}

/// Each tenant on a line: its name, then its principals (or that only
/// operators act in it).
pub fn tenants(value: &Value) -> String {
    let listed = value["tenants"].as_array().cloned().unwrap_or_default();
    if listed.is_empty() {
        return "No tenants: every admitted caller acts in the default tenant.".to_owned();
    }
    listed
        .iter()
        .map(|t| {
            let principals: Vec<String> = t["principals"]
                .as_array()
                .map(|ps| ps.iter().map(cell).collect())
                .unwrap_or_default();
            let who = if principals.is_empty() {
                "(operators only)".to_owned()
            } else {
                principals.join(", ")
            };
            format!("{}  {who}", cell(&t["tenant"]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows under a header, each column as wide as its widest cell; a TENANT
/// column first when any connection is not the default tenant's.
pub fn table(connections: &[Value]) -> String {
    let tenants = connections.iter().any(|c| c["tenant"].is_string());
    let columns: Vec<(&str, &str)> = tenants
        .then_some(("TENANT", "tenant"))
        .into_iter()
        .chain(LIST_COLUMNS)
        .collect();
    let rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| columns.iter().map(|(_, f)| column(c, f)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, _))| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// A refresh's answer: its `outcome` on the first line, then the connection.
pub fn outcome_then_connection(value: &Value) -> String {
    let mut out = vec![format!("outcome: {}", cell(&value["outcome"]))];
    if value["connection"].is_object() {
        out.push(fields(&value["connection"]));
    }
    out.join("\n")
}

/// An object's fields as `key: value` lines (nested objects indented).
pub fn fields(value: &Value) -> String {
    let mut out = Vec::new();
    push_fields(value, 0, &mut out);
    out.join("\n")
}

fn push_fields(value: &Value, depth: usize, out: &mut Vec<String>) {
    let indent = "  ".repeat(depth);
    let Some(map) = value.as_object() else {
        out.push(format!("{indent}{}", cell(value)));
        return;
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in map {
        if value.is_object() {
            out.push(format!("{indent}{key}:"));
            push_fields(value, depth + 1, out);
        } else {
            out.push(format!("{indent}{key:<width$}  {}", cell(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns_and_shows_missing_values_as_dashes() {
        let out = table(&[
            json!({"connection_id": "acme", "product": "crm", "status": "active", "consecutive_failures": 0}),
            json!({"connection_id": "a-much-longer-id", "product": "marketing", "status": "needs_reauth", "status_reason": "invalid_grant"}),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CONNECTION        PRODUCT    STATUS"));
        assert!(lines[1].starts_with("acme              crm        active"));
        assert!(lines[2].contains("needs_reauth  invalid_grant"));
        assert!(lines[1].contains(" - "));
    }

    #[test]
    fn a_tenant_column_comes_first_when_a_connection_has_a_tenant() {
        let out = table(&[
            json!({"connection_id": "a", "product": "crm"}),
            json!({"tenant": "acme", "connection_id": "b", "product": "crm"}),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TENANT   CONNECTION"), "{out}");
        assert!(lines[1].starts_with("default  a"), "{out}");
        assert!(lines[2].starts_with("acme     b"), "{out}");
    }
}
