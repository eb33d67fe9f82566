//! Reads template.yaml, the one list of what Tenantry deploys, so the local stack creates exactly the
//! resources, routes and environments that `sam deploy` would. Understands the short-form tags the
//! template is allowed to use: `!Ref X`, `!GetAtt X.Arn`, `!Sub "..."`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_yaml::Value;

/// A value in the template that may refer to a resource or parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(String),
    Ref(String),
    GetAtt(String, String),
    Sub(String),
}

impl Expr {
    pub fn parse(v: &Value) -> anyhow::Result<Self> {
        match v {
            Value::String(s) => Ok(Self::Literal(s.clone())),
            Value::Number(n) => Ok(Self::Literal(n.to_string())),
            Value::Bool(b) => Ok(Self::Literal(b.to_string())),
            Value::Tagged(t) => {
                let arg = t.value.as_str().context("tag argument must be a string")?;
                match t.tag.to_string().trim_start_matches('!') {
                    "Ref" => Ok(Self::Ref(arg.to_owned())),
                    "GetAtt" => {
                        let (res, att) = arg.split_once('.').context("!GetAtt takes Resource.Attribute")?;
                        Ok(Self::GetAtt(res.to_owned(), att.to_owned()))
                    }
                    "Sub" => Ok(Self::Sub(arg.to_owned())),
                    other => bail!("the local stack does not understand !{other}"),
                }
            }
            other => bail!("unsupported template value {other:?}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
    /// `Auth: {Authorizer: NONE}`: API Gateway calls no authorizer.
    pub public: bool,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    pub binary: String,
    pub environment: BTreeMap<String, Expr>,
    pub routes: Vec<HttpRoute>,
    /// Logical ids of queues feeding this function (SQS events).
    pub queues: Vec<String>,
    /// Schedule events, as written (`rate(5 minutes)`).
    pub schedules: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub parameters: BTreeMap<String, Option<String>>,
    pub resources: Vec<Resource>,
    pub functions: Vec<Function>,
}

impl Template {
    /// The repository's template.yaml.
    pub fn load_default() -> anyhow::Result<Self> {
        Self::parse(include_str!("../../../template.yaml"))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_yaml::from_str(text).context("template.yaml is not YAML")?;
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let default = v.get("Default").and_then(|d| match d {
                            Value::String(s) => Some(s.clone()),
                            Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        });
                        Some((k.as_str()?.to_owned(), default))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let globals_env = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"));
        let mut resources = Vec::new();
        let mut functions = Vec::new();
        let entries = doc.get("Resources").and_then(Value::as_mapping).context("template has no Resources")?;
        for (id, body) in entries {
            let logical_id = id.as_str().context("resource ids are strings")?.to_owned();
            let kind = body.get("Type").and_then(Value::as_str).context("resource without Type")?.to_owned();
            let properties = body.get("Properties").cloned().unwrap_or(Value::Null);
            if kind == "AWS::Serverless::Function" {
                functions.push(parse_function(&logical_id, body, &properties, globals_env)?);
            }
            resources.push(Resource { logical_id, kind, properties });
        }
        Ok(Self { parameters, resources, functions })
    }

    pub fn function(&self, logical_id: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.logical_id == logical_id)
    }
}

fn parse_function(
    logical_id: &str,
    body: &Value,
    props: &Value,
    globals_env: Option<&Value>,
) -> anyhow::Result<Function> {
    let binary = body
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .with_context(|| format!("{logical_id} has no Metadata.BuildProperties.Binary"))?
        .to_owned();
    let mut environment = BTreeMap::new();
    for vars in [globals_env, props.get("Environment").and_then(|e| e.get("Variables"))].into_iter().flatten() {
        for (k, v) in vars.as_mapping().into_iter().flatten() {
            let k = k.as_str().context("environment names are strings")?;
            environment.insert(k.to_owned(), Expr::parse(v).with_context(|| format!("{logical_id} env {k}"))?);
        }
    }
    let mut routes = Vec::new();
    let mut queues = Vec::new();
    let mut schedules = Vec::new();
    for (_, event) in props.get("Events").and_then(Value::as_mapping).into_iter().flatten() {
        let p = event.get("Properties").cloned().unwrap_or(Value::Null);
        match event.get("Type").and_then(Value::as_str) {
            Some("HttpApi") => routes.push(HttpRoute {
                method: p.get("Method").and_then(Value::as_str).unwrap_or("ANY").to_uppercase(),
                path: p.get("Path").and_then(Value::as_str).context("HttpApi event without Path")?.to_owned(),
                public: p.get("Auth").and_then(|a| a.get("Authorizer")).and_then(Value::as_str) == Some("NONE"),
            }),
            Some("SQS") => {
                if let Some(Expr::GetAtt(queue, _)) = p.get("Queue").map(Expr::parse).transpose()? {
                    queues.push(queue);
                }
            }
            Some("Schedule" | "ScheduleV2") => {
                if let Some(s) = p.get("Schedule").or_else(|| p.get("ScheduleExpression")).and_then(Value::as_str) {
                    schedules.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(Function { logical_id: logical_id.to_owned(), binary, environment, routes, queues, schedules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_template_declares_the_tenancy_table_and_the_http_functions() {
        let t = Template::load_default();
        assert!(t.as_ref().is_ok_and(|t| t.resources.iter().any(|r| r.kind == "AWS::DynamoDB::Table")), "{t:?}");
        let t = t.ok();
        let control = t.as_ref().and_then(|t| t.function("ControlFunction"));
        assert!(control.is_some_and(|c| { c.routes.iter().any(|r| r.path == "/openapi.json" && r.public) }));
        assert!(control.is_some_and(|c| c.environment.get("TENANCY_TABLE") == Some(&Expr::Ref("TenancyTable".into()))));
    }
}
