//! The template as CloudFormation receives it: `scripts/transform-template.py`
//! runs the SAM translator (the transform `sam validate` and CloudFormation run)
//! over `template.yaml`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The translator's output (needs the venv `make test` installs).
pub fn transformed() -> Value {
    let root = workspace();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it installs the SAM translator)",
        python.display()
    );
    let output = Command::new(python)
        .arg(root.join("scripts/transform-template.py"))
        .arg(root.join("template.yaml"))
        .output()
        .expect("run the SAM translator");
    assert!(
        output.status.success(),
        "the SAM transform rejected template.yaml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the translator prints JSON")
}

/// The resources of type `kind`, by logical id.
pub fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_object()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str(), r))
        .collect()
}

/// Every action each function's role allows, with the resources it names.
pub fn role_actions(template: &Value, role: &str) -> Vec<String> {
    let mut actions = Vec::new();
    for policy in template["Resources"][role]["Properties"]["Policies"]
        .as_array()
        .expect("inline policies")
    {
        for statement in policy["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements")
        {
            assert_eq!(statement["Effect"], "Allow");
            match &statement["Action"] {
                Value::String(a) => actions.push(a.clone()),
                Value::Array(list) => {
                    actions.extend(list.iter().map(|a| a.as_str().expect("action").to_owned()));
                }
                other => panic!("unexpected Action {other}"),
            }
            assert_ne!(
                statement["Resource"], "*",
                "{role}: a statement on every resource"
            );
        }
    }
    actions
}
