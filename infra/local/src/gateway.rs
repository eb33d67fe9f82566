//! API Gateway, locally: routes from template.yaml's HttpApi events, the Lambda authorizer called with a
//! payload-2.0 event before each protected route, and its context put into the request exactly where
//! lambda_http puts it in Lambda (`RequestContext::ApiGatewayV2`), so the function's own axum router
//! serves the request with the same code that ships.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use authorizer::Authorizer;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::template::{Expr, Template};

/// One route as API Gateway would hold it.
struct Target {
    route_key: String,
    public: bool,
    function: Router,
    authorizer: Arc<Authorizer>,
}

/// The HTTP function routers by logical id, and the authorizer; builds the gateway from the template.
pub fn gateway(
    template: &Template,
    functions: &HashMap<String, Router>,
    authorizer: Arc<Authorizer>,
) -> anyhow::Result<Router> {
    check_authorizer_is_declared(template)?;
    let mut router = Router::new();
    for f in &template.functions {
        if f.routes.is_empty() {
            continue;
        }
        let function = functions
            .get(&f.logical_id)
            .with_context(|| format!("template routes to {} but the local stack has no router for it", f.logical_id))?;
        for route in &f.routes {
            let target = Arc::new(Target {
                route_key: format!("{} {}", route.method, route.path),
                public: route.public,
                function: function.clone(),
                authorizer: authorizer.clone(),
            });
            let handler = move |req: Request| {
                let target = target.clone();
                async move { invoke(&target, req).await }
            };
            let path = route.path.replace("+}", "}").replace("{proxy}", "{*proxy}");
            let method = match route.method.as_str() {
                "GET" => axum::routing::get(handler),
                "POST" => axum::routing::post(handler),
                "PUT" => axum::routing::put(handler),
                "PATCH" => axum::routing::patch(handler),
                "DELETE" => axum::routing::delete(handler),
                _ => axum::routing::any(handler),
            };
            router = router.route(&path, method);
        }
    }
    // What API Gateway answers for a route it does not have.
    Ok(router.fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))) }))
}

/// Adds a Function URL's routes: they reach the function's router as they are, with no authorizer in front
/// (the function authenticates itself, as behind a real Function URL).
pub fn function_url(router: Router, served: &[(axum::http::Method, &'static str)], function: Router) -> Router {
    let mut paths: Vec<&str> = served.iter().map(|(_, p)| *p).collect();
    paths.sort_unstable();
    paths.dedup();
    paths.into_iter().fold(router, |r, path| {
        let function = function.clone();
        let handler = move |req: Request| {
            let function = function.clone();
            // A fresh request, as Lambda builds one from the URL's event: the function's router matches the
            // path itself, with none of this router's extensions (matched path, parameters).
            let (parts, body) = req.into_parts();
            let mut fresh = Request::new(body);
            *fresh.method_mut() = parts.method;
            *fresh.uri_mut() = parts.uri;
            *fresh.headers_mut() = parts.headers;
            async move {
                match function.oneshot(fresh).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        };
        r.route(path, axum::routing::any(handler))
    })
}

/// The HttpApi's default authorizer must be the authorizer function we run.
fn check_authorizer_is_declared(template: &Template) -> anyhow::Result<()> {
    let api = template.resources.iter().find(|r| r.kind == "AWS::Serverless::HttpApi").context("no HttpApi")?;
    let auth = api.properties.get("Auth").context("HttpApi has no Auth")?;
    let default = auth.get("DefaultAuthorizer").and_then(|v| v.as_str()).context("no DefaultAuthorizer")?;
    let arn = auth
        .get("Authorizers")
        .and_then(|a| a.get(default))
        .and_then(|a| a.get("FunctionArn"))
        .context("authorizer FunctionArn")?;
    match Expr::parse(arn)? {
        Expr::GetAtt(f, _) if template.function(&f).is_some_and(|f| f.binary == "authorizer") => Ok(()),
        other => anyhow::bail!("the default authorizer is {other:?}, not the authorizer function"),
    }
}

fn headers_json(req: &Request) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in req.headers() {
        let v = value.to_str().unwrap_or_default();
        map.entry(name.as_str().to_owned())
            .and_modify(|e| {
                if let Value::String(s) = e {
                    s.push(',');
                    s.push_str(v);
                }
            })
            .or_insert_with(|| json!(v));
    }
    Value::Object(map)
}

async fn invoke(target: &Target, req: Request) -> Response {
    let request_id = ulid::Ulid::new().to_string();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let http = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default(),
    });
    let mut context = json!({
        "routeKey": target.route_key, "accountId": "123456789012", "apiId": "local", "stage": "$default",
        "requestId": request_id, "domainName": "127.0.0.1", "timeEpoch": now_ms, "http": http,
    });
    if !target.public {
        let event = json!({
            "version": "2.0", "type": "REQUEST",
            "routeArn": format!("arn:aws:execute-api:us-east-1:123456789012:local/$default/{}", target.route_key.replace(' ', "")),
            "identitySource": [], "routeKey": target.route_key, "rawPath": req.uri().path(),
            "rawQueryString": req.uri().query().unwrap_or_default(), "headers": headers_json(&req),
            "requestContext": context,
        });
        let response = match serde_json::from_value(event) {
            Ok(event) => target.authorizer.handle(event).await,
            Err(e) => {
                return internal(anyhow::Error::new(e).context("building the authorizer event"));
            }
        };
        if !response.is_authorized {
            return (StatusCode::FORBIDDEN, axum::Json(json!({"message": "Forbidden"}))).into_response();
        }
        context["authorizer"] = json!({"lambda": response.context});
    }
    // A fresh request, as lambda_http builds one from the event: none of the gateway router's own
    // extensions (its matched path and parameters) may leak into the function's router.
    let (parts, body) = req.into_parts();
    let mut fresh = Request::new(Body::new(body));
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.headers_mut() = parts.headers;
    match serde_json::from_value(context) {
        Ok(ctx) => {
            fresh.extensions_mut().insert(RequestContext::ApiGatewayV2(ctx));
        }
        Err(e) => return internal(anyhow::Error::new(e).context("building the request context")),
    }
    match target.function.clone().oneshot(fresh).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = ?e, "local gateway failure");
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": "Internal Server Error"}))).into_response()
}
