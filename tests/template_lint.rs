//! Checks on template.yaml, the SAM template that deploys Tenantry and that the local stack reads.
//!
//! - cfn-lint on the SAM source. cfn-lint 1.x validates a SAM template against SAM's schemas without running
//!   the transform, so it neither looks inside inline IAM policies nor sees the roles SAM generates.
//! - cfn-lint again on the template after the SAM transform (aws-sam-translator, run by the venv's Python):
//!   that is what catches a misspelt IAM action or a circular dependency through a generated `<Function>Role`.
//! - The facts the build and the local stack rely on: arm64 / provided.al2023, a cargo-lambda build of a crate
//!   in functions/, per-function environment variables, and only the short-form tags the local stack parses.
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

#[test]
fn the_template_uses_only_the_short_form_tags_the_local_stack_reads() {
    let template = template();
    assert!(template.get("Conditions").is_none(), "template.yaml must not declare Conditions");
    let mut found = Vec::new();
    irregular_nodes(&template, "", &mut found);
    assert!(
        found.is_empty(),
        "use only !Ref X, !GetAtt X.Arn and !Sub \"...\" (string form), no long-form Fn:: \
         functions and no conditions; found:\n{}",
        found.join("\n")
    );
}
