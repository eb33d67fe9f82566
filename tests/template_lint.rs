//! Checks on template.yaml, the SAM template that deploys Tenantry and that the local stack reads.
//!
//! - cfn-lint on the SAM source. cfn-lint 1.x validates a SAM template against SAM's schemas without running
//!   the transform, so it neither looks inside inline IAM policies nor sees the roles SAM generates.
//! - cfn-lint again on the template after the SAM transform (aws-sam-translator, run by the venv's Python):
//!   that is what catches a misspelt IAM action or a circular dependency through a generated `<Function>Role`.
//! - The facts the build and the local stack rely on: arm64 / provided.al2023, a cargo-lambda build of a crate
//!   in functions/, per-function environment variables, and only the short-form tags the local stack parses.
//! - Alarms: every `*DeadLetters` queue and every function has its CloudWatch alarm, and every alarm notifies
//!   AlarmTopic, so a new queue or function without one fails here.
//!
//! cfn-lint exit status is a bit set: 2 error, 4 warning, 8 informational. Errors and warnings fail a test;
//! informational findings alone do not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

const INSTALL_HINT: &str = "run ./dev test (it installs cfn-lint into .venv)";

fn repo_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn template_path() -> PathBuf {
    repo_root().join("template.yaml")
}

fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv").join("bin").join(name);
    assert!(path.is_file(), "{} is missing: {INSTALL_HINT}", path.display());
    path
}

fn template() -> Value {
    let path = template_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not YAML serde_yaml can read: {err}", path.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the venv's cfn-lint on `target` and fails on any error or warning.
fn assert_cfn_lint_passes(target: &Path) {
    let cfn_lint = venv_bin("cfn-lint");
    let output = Command::new(&cfn_lint)
        .arg("--")
        .arg(target)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", cfn_lint.display()));
    // 0: clean; 8: informational findings only. Anything else (errors, warnings, a crash, a signal) fails.
    let passed = matches!(output.status.code(), Some(0) | Some(8));
    assert!(passed, "cfn-lint reports errors or warnings in {}\n{}", target.display(), describe(&output));
}

#[test]
fn cfn_lint_finds_no_errors_or_warnings_in_the_template() {
    assert_cfn_lint_passes(&template_path());
}

/// Runs the SAM transform offline, the way CloudFormation would, and writes the result as JSON.
/// Local CodeUri values become a placeholder S3 URI (as `sam package` would make them) and managed
/// policy names resolve to AWS managed policy ARNs, so nothing here needs an AWS account or the network.
const SAM_TRANSFORM: &str = r#"
import json, os, sys
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
try:
    from samtranslator.translator.transform import transform
except ImportError as err:
    print(f"aws-sam-translator is not installed in this venv: {err}", file=sys.stderr)
    sys.exit(3)
from cfnlint.decode import decode

template, problems = decode(sys.argv[1])
if problems:
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(2)
for resource in template.get("Resources", {}).values():
    if resource.get("Type") == "AWS::Serverless::Function":
        properties = resource.setdefault("Properties", {})
        code_uri = properties.get("CodeUri")
        if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
            properties["CodeUri"] = "s3://placeholder-bucket/code.zip"

class AnyManagedPolicy(dict):
    def __contains__(self, name):
        return True
    def __getitem__(self, name):
        return "arn:aws:iam::aws:policy/" + name
    def get(self, name, default=None):
        return self[name]

class Loader:
    def load(self):
        return AnyManagedPolicy()

out = transform(template, {}, Loader())
out.pop("Transform", None)
with open(sys.argv[2], "w") as f:
    json.dump(out, f, indent=1, default=str)
"#;

#[test]
fn cfn_lint_finds_no_errors_or_warnings_in_the_template_after_the_sam_transform() {
    // Checked first so a fresh clone gets the same hint as the other lint test.
    venv_bin("cfn-lint");
    let python = venv_bin("python");
    let transformed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("template.transformed.json");
    let output = Command::new(&python)
        .arg("-c")
        .arg(SAM_TRANSFORM)
        .arg(template_path())
        .arg(&transformed)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
    if output.status.code() == Some(3) {
        panic!(
            "aws-sam-translator is missing from .venv: run ./dev test (it installs cfn-lint and \
             aws-sam-translator into .venv), or .venv/bin/pip install aws-sam-translator\n{}",
            describe(&output)
        );
    }
    assert!(output.status.success(), "the SAM transform of template.yaml failed\n{}", describe(&output));
    assert_cfn_lint_passes(&transformed);
}

fn resources(template: &Value) -> Vec<(String, &Value)> {
    let resources =
        template.get("Resources").and_then(Value::as_mapping).expect("template.yaml has a Resources mapping");
    resources
        .iter()
        .map(|(id, resource)| {
            let id = id.as_str().expect("resource ids are strings").to_owned();
            (id, resource)
        })
        .collect()
}

fn functions(template: &Value) -> Vec<(String, &Value)> {
    let functions: Vec<_> = resources(template)
        .into_iter()
        .filter(|(_, resource)| resource.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function"))
        .collect();
    assert!(!functions.is_empty(), "template.yaml declares no AWS::Serverless::Function");
    functions
}

/// A function property, or the Globals.Function one when the function does not set it.
fn function_property<'a>(template: &'a Value, function: &'a Value, name: &str) -> Option<&'a Value> {
    function
        .get("Properties")
        .and_then(|properties| properties.get(name))
        .or_else(|| template.get("Globals")?.get("Function")?.get(name))
}

#[test]
fn every_function_is_arm64_al2023_and_built_with_cargo_lambda() {
    let template = template();
    let crates_dir = repo_root().join("functions");
    for (id, function) in functions(&template) {
        let runtime = function_property(&template, function, "Runtime").and_then(Value::as_str);
        assert_eq!(runtime, Some("provided.al2023"), "{id}: Runtime");

        let architectures = function_property(&template, function, "Architectures")
            .and_then(Value::as_sequence)
            .map(|list| list.iter().map(Value::as_str).collect::<Vec<_>>());
        assert_eq!(architectures, Some(vec![Some("arm64")]), "{id}: Architectures");

        let metadata = function.get("Metadata");
        let build_method = metadata.and_then(|m| m.get("BuildMethod")).and_then(Value::as_str);
        assert_eq!(build_method, Some("rust-cargolambda"), "{id}: Metadata.BuildMethod");

        let binary = metadata
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|p| p.get("Binary"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{id}: Metadata.BuildProperties.Binary is missing"));
        let crate_dir = crates_dir.join(binary);
        assert!(
            !binary.is_empty() && !binary.contains(['/', '\\', '.']) && crate_dir.join("Cargo.toml").is_file(),
            "{id}: BuildProperties.Binary {binary:?} is not a crate folder under {}",
            crates_dir.display()
        );
    }
}

#[test]
fn every_function_lists_its_own_environment_variables() {
    // The local stack builds each function's environment from its own Environment.Variables only.
    let template = template();
    for (id, function) in functions(&template) {
        let variables = function
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping);
        let variables = variables.unwrap_or_else(|| panic!("{id}: no Properties.Environment.Variables"));
        for name in ["TENANCY_TABLE", "RUST_LOG"] {
            assert!(variables.contains_key(name), "{id}: Environment.Variables has no {name}");
        }
    }
}

/// Collects what the local stack could not read: other tags, !GetAtt or !Sub in another form, and
/// intrinsic functions in long form (`Ref:` or `Fn::...:` keys).
fn irregular_nodes(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Tagged(tagged) => {
            let inner = &tagged.value;
            let ok = if tagged.tag == "Ref" {
                inner.as_str().is_some()
            } else if tagged.tag == "GetAtt" {
                inner.as_str().is_some_and(|s| s.split('.').count() == 2)
            } else if tagged.tag == "Sub" {
                inner.as_str().is_some()
            } else {
                false
            };
            if !ok {
                found.push(format!("{path}: {} {inner:?}", tagged.tag));
            }
        }
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                let key = key.as_str().unwrap_or("?");
                if key.starts_with("Fn::") || key == "Ref" {
                    found.push(format!("{path}.{key}"));
                }
                irregular_nodes(child, &format!("{path}.{key}"), found);
            }
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter().enumerate() {
                irregular_nodes(child, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// Resource types the local stack creates or reads (infra/local/src/provision.rs, gateway.rs, template.rs): it
/// ignores `Condition`, so none of these may carry one.
const LOCALLY_CREATED: [&str; 7] = [
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::S3::Bucket",
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::Serverless::Function",
    "AWS::Serverless::HttpApi",
];

/// What is wrong with the template's Conditions: tags other than !Equals, !Not and !Ref in them, and a
/// Condition on a resource the local stack creates (it would create it whatever the condition says).
fn irregular_conditions(template: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::Tagged(tagged) => {
                if !matches!(tagged.tag.to_string().trim_start_matches('!'), "Equals" | "Not" | "Ref") {
                    found.push(format!("{path}: {}", tagged.tag));
                }
                walk(&tagged.value, path, found);
            }
            Value::Sequence(items) => items.iter().for_each(|item| walk(item, path, found)),
            Value::Mapping(mapping) => mapping.values().for_each(|child| walk(child, path, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (name, condition) in template.get("Conditions").and_then(Value::as_mapping).into_iter().flatten() {
        walk(condition, &format!("Conditions.{}", name.as_str().unwrap_or("?")), &mut found);
    }
    for (id, resource) in resources(template) {
        let kind = resource.get("Type").and_then(Value::as_str).unwrap_or_default();
        if resource.get("Condition").is_some() && LOCALLY_CREATED.contains(&kind) {
            found.push(format!("{id}: a Condition on a {kind}, which the local stack creates regardless"));
        }
    }
    found
}

#[test]
fn the_template_uses_only_the_short_form_tags_the_local_stack_reads() {
    let template = template();
    let mut found = irregular_conditions(&template);
    let mut rest = template.clone();
    if let Some(mapping) = rest.as_mapping_mut() {
        mapping.remove("Conditions");
    }
    irregular_nodes(&rest, "", &mut found);
    assert!(
        found.is_empty(),
        "use only !Ref X, !GetAtt X.Arn and !Sub \"...\" (string form), no long-form Fn:: \
         functions, and conditions (!Equals, !Not) only on resources the local stack does not create; found:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_condition_on_a_resource_the_local_stack_creates_is_refused() {
    let mut template = template();
    assert!(irregular_conditions(&template).is_empty(), "{:?}", irregular_conditions(&template));
    let queue = template.get_mut("Resources").and_then(|r| r.get_mut("SyncQueue")).and_then(Value::as_mapping_mut);
    queue.expect("template.yaml has SyncQueue").insert("Condition".into(), "HasAlarmEmail".into());
    let found = irregular_conditions(&template);
    assert!(found.iter().any(|f| f.starts_with("SyncQueue:")), "{found:?}");
}

/// The alarm a resource needs, as (alarm namespace, metric, dimension name, dimension value).
fn required_alarms(template: &Value) -> Vec<(String, &'static str, &'static str, &'static str, String)> {
    let mut required = Vec::new();
    for (id, resource) in resources(template) {
        let kind = resource.get("Type").and_then(Value::as_str);
        if kind == Some("AWS::SQS::Queue") && id.ends_with("DeadLetters") {
            let value = format!("!GetAtt {id}.QueueName");
            required.push((id.clone(), "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", value));
        }
    }
    for (id, _) in functions(template) {
        for metric in ["Errors", "Throttles"] {
            required.push((id.clone(), "AWS/Lambda", metric, "FunctionName", format!("!Ref {id}")));
        }
    }
    required
}

/// `!Ref X` / `!GetAtt X.Y` as text, to compare alarm dimensions and actions with what they must name.
fn expression_text(value: &Value) -> String {
    match value {
        Value::Tagged(tagged) => {
            format!("!{} {}", tagged.tag.to_string().trim_start_matches('!'), expression_text(&tagged.value))
        }
        Value::String(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Every dead-letter queue and every function without its alarm, and every alarm that does not notify
/// AlarmTopic on both ALARM and OK.
fn missing_alarms(template: &Value) -> Vec<String> {
    let alarms: Vec<(String, &Value)> = resources(template)
        .into_iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::CloudWatch::Alarm"))
        .filter_map(|(id, r)| Some((id, r.get("Properties")?)))
        .collect();
    let mut missing = Vec::new();
    for (alarm, properties) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let named: Vec<String> = properties
                .get(actions)
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .map(expression_text)
                .collect();
            if named != ["!Ref AlarmTopic"] {
                missing.push(format!("{alarm}: {actions} must be [!Ref AlarmTopic], is {named:?}"));
            }
        }
    }
    for (id, namespace, metric, dimension, value) in required_alarms(template) {
        let found = alarms.iter().any(|(_, p)| {
            p.get("Namespace").and_then(Value::as_str) == Some(namespace)
                && p.get("MetricName").and_then(Value::as_str) == Some(metric)
                && p.get("Dimensions").and_then(Value::as_sequence).is_some_and(|dimensions| {
                    dimensions.iter().any(|d| {
                        d.get("Name").and_then(Value::as_str) == Some(dimension)
                            && d.get("Value").map(expression_text).as_deref() == Some(value.as_str())
                    })
                })
        });
        if !found {
            missing.push(format!("{id}: no alarm on {namespace} {metric} with {dimension} = {value}"));
        }
    }
    missing
}

#[test]
fn every_dead_letter_queue_and_every_function_has_an_alarm_that_notifies_the_alarm_topic() {
    let template = template();
    let missing = missing_alarms(&template);
    assert!(
        missing.is_empty(),
        "add the missing alarms to template.yaml (copy a block under \"Alarms\"; docs/deploy.md):\n{}",
        missing.join("\n")
    );
    let required = required_alarms(&template);
    let queues = required.iter().filter(|r| r.2 == "ApproximateNumberOfMessagesVisible").count();
    assert!(queues >= 4, "expected at least the four dead-letter queues, found {queues}");
    let topic = template.get("Resources").and_then(|r| r.get("AlarmTopic")).and_then(|t| t.get("Type"));
    assert_eq!(topic.and_then(Value::as_str), Some("AWS::SNS::Topic"));
    let output = template.get("Outputs").and_then(|o| o.get("AlarmTopicArn")).and_then(|o| o.get("Value"));
    assert_eq!(output.map(expression_text).as_deref(), Some("!Ref AlarmTopic"));
}

#[test]
fn a_new_dead_letter_queue_or_function_without_an_alarm_is_found() {
    let mut template = template();
    let resources = template.get_mut("Resources").and_then(Value::as_mapping_mut).expect("Resources mapping");
    let queue = resources.get("SyncDeadLetters").cloned().expect("template.yaml has SyncDeadLetters");
    resources.insert("ExampleDeadLetters".into(), queue);
    let function = resources.get("SyncWorkerFunction").cloned().expect("template.yaml has SyncWorkerFunction");
    resources.insert("ExampleFunction".into(), function);
    resources
        .get_mut("SyncDeadLettersAlarm")
        .and_then(Value::as_mapping_mut)
        .and_then(|alarm| alarm.get_mut("Properties").and_then(Value::as_mapping_mut).map(|p| p.remove("OKActions")));
    let missing = missing_alarms(&template);
    assert_eq!(
        missing,
        [
            "SyncDeadLettersAlarm: OKActions must be [!Ref AlarmTopic], is []",
            "ExampleDeadLetters: no alarm on AWS/SQS ApproximateNumberOfMessagesVisible with QueueName = !GetAtt ExampleDeadLetters.QueueName",
            "ExampleFunction: no alarm on AWS/Lambda Errors with FunctionName = !Ref ExampleFunction",
            "ExampleFunction: no alarm on AWS/Lambda Throttles with FunctionName = !Ref ExampleFunction",
        ]
    );
}
