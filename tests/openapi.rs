//! The OpenAPI document, template.yaml and the routers agree: every served route is documented and
//! deployed, and nothing is documented or deployed that no router serves.

use std::collections::BTreeSet;

use tenantry_local::Template;

fn served(function: &str) -> BTreeSet<String> {
    let routes = match function {
        "ControlFunction" => control::routes().served(),
        "DataFunction" => data::routes().served(),
        "ConnectFunction" => connect::routes().served(),
        "WebhooksFunction" => webhooks::routes().served(),
        "BillingFunction" => billing::routes().served(),
        "PurgeFunction" => purge::routes().served(),
        "ExportFunction" => export::routes().served(),
        other => panic!("no router for {other}"),
    };
    routes.into_iter().map(|(m, p)| format!("{m} {p}")).collect()
}

#[test]
fn every_served_route_is_in_the_openapi_document_and_the_template_and_nothing_else_is() {
    let template = Template::load_default().unwrap_or_else(|e| panic!("template.yaml: {e:?}"));
    let mut all_served = BTreeSet::new();
    for f in template.functions.iter().filter(|f| !f.routes.is_empty()) {
        let deployed: BTreeSet<String> = f.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        let serves = served(&f.logical_id);
        assert_eq!(deployed, serves, "{}: template.yaml routes vs the routes its router serves", f.logical_id);
        all_served.extend(serves);
    }
    // The meter is reached through its Function URL: no template routes, the router serves them all.
    let meter = template.function("MeterFunction").unwrap_or_else(|| panic!("template.yaml has no MeterFunction"));
    assert!(meter.routes.is_empty(), "the meter streams through a Function URL, not the HTTP API");
    all_served.extend(meter::routes().served().into_iter().map(|(m, p)| format!("{m} {p}")));
    let documented: BTreeSet<String> =
        shared::openapi::operations().into_iter().map(|(m, p)| format!("{m} {p}")).collect();
    let missing: Vec<_> = all_served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&all_served).collect();
    assert!(missing.is_empty(), "served but not in shared/openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "in shared/openapi.yaml but served by no function: {extra:?}");
}

/// Public routes are the document, the providers' and Stripe's webhooks (their signatures are the credential), and the browser's side of connecting: the Connect page (its link is the
/// credential) and the providers' way back (its `state` is).
#[test]
fn only_the_openapi_document_the_connect_page_and_the_oauth_callback_are_public() {
    let template = Template::load_default().unwrap_or_else(|e| panic!("template.yaml: {e:?}"));
    let mut public: Vec<String> =
        template.functions.iter().flat_map(|f| f.routes.iter()).filter(|r| r.public).map(|r| r.path.clone()).collect();
    public.sort();
    assert_eq!(
        public,
        vec![
            "/connect/{link}",
            "/connect/{link}/{provider}/connect",
            "/connect/{link}/{provider}/disconnect",
            "/connect/{link}/{provider}/sync",
            "/oauth/{provider}/callback",
            "/openapi.json",
            "/webhooks/stripe/{tenant_id}",
            "/webhooks/{provider}/{tenant_id}",
            "/webhooks/{provider}/{tenant_id}"
        ]
    );
}
