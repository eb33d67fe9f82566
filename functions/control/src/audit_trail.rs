//! What each of control's changes records in the tenant's audit log (`shared::audit::trail` runs it).

use axum::http::Method;
use shared::audit::{Audited, Target};

/// `(method, route)` to its audit entry; reads and test pings record nothing.
pub fn table(method: &Method, route: &str) -> Option<Audited> {
    let setting = |name: &str, verb: &str| -> &'static str {
        match (name, verb) {
            ("auth", "PUT") => "settings.auth.updated",
            ("auth", _) => "settings.auth.deleted",
            ("source-priority", _) => "settings.source_priority.updated",
            ("connect", _) => "settings.connect.updated",
            ("webhooks", "PUT") => "settings.webhooks.updated",
            ("webhooks", _) => "settings.webhooks.deleted",
            ("metering", _) => "settings.metering.updated",
            ("stripe", "PUT") => "settings.stripe.updated",
            ("stripe", _) => "settings.stripe.deleted",
            _ => "settings.updated",
        }
    };
    let verb = method.as_str();
    let entry = match (verb, route) {
        ("POST", "/admin/v1/tenants") => Audited::new("tenant.created", Target::Answer("tenant", "id")),
        ("POST", "/admin/v1/tenants/{tenant_id}/disable") => {
            Audited::new("tenant.disabled", Target::Param("tenant", "tenant_id"))
        }
        ("POST", "/admin/v1/tenants/{tenant_id}/enable") => {
            Audited::new("tenant.enabled", Target::Param("tenant", "tenant_id"))
        }
        ("POST", "/v1/api-keys") => Audited::new("api_key.created", Target::Answer("api_key", "id")),
        ("DELETE", "/v1/api-keys/{key_id}") => Audited::new("api_key.revoked", Target::Param("api_key", "key_id")),
        ("PUT", "/v1/settings/providers/{provider}") => {
            Audited::new("settings.provider_app.updated", Target::Param("provider", "provider"))
        }
        ("POST", "/v1/settings/webhooks/rotate-secret") => {
            Audited::new("settings.webhooks.secret_rotated", Target::None)
        }
        ("POST", "/v1/webhook-deliveries/{delivery_id}/replay") => {
            Audited::new("webhook_delivery.replayed", Target::Param("webhook_delivery", "delivery_id"))
        }
        ("PUT", "/v1/settings/plans/{plan}") => Audited::new("settings.plan.updated", Target::Param("plan", "plan")),
        ("DELETE", "/v1/settings/plans/{plan}") => Audited::new("settings.plan.deleted", Target::Param("plan", "plan")),
        ("PUT", "/v1/settings/llm/{provider}") => {
            Audited::new("settings.llm_key.updated", Target::Param("llm", "provider"))
        }
        ("DELETE", "/v1/settings/llm/{provider}") => {
            Audited::new("settings.llm_key.deleted", Target::Param("llm", "provider"))
        }
        ("POST", "/admin/v1/dead-letters/{queue}/redrive") => return None,
        ("PUT" | "DELETE", r) => {
            let name = r.strip_prefix("/v1/settings/")?;
            let name = ["auth", "source-priority", "connect", "webhooks", "metering", "stripe"]
                .into_iter()
                .find(|n| *n == name)?;
            Audited::new(setting(name, verb), Target::None)
        }
        _ => return None,
    };
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_control_is_audited_and_reads_are_not() {
        for (method, route) in crate::routes().served() {
            let audited = table(&method, route);
            let change = method != Method::GET && !route.ends_with("/test") && !route.contains("/dead-letters/");
            assert_eq!(audited.is_some(), change, "{method} {route}");
        }
        let key = table(&Method::DELETE, "/v1/api-keys/{key_id}").map(|a| a.action);
        assert_eq!(key, Some("api_key.revoked"));
        assert_eq!(table(&Method::PUT, "/v1/settings/stripe").map(|a| a.action), Some("settings.stripe.updated"));
    }
}
