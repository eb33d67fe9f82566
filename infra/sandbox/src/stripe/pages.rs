//! The hosted pages: a Checkout page (Pay / decline / Cancel) standing in for Stripe Checkout, and a customer
//! portal page where a subscription can be cancelled now or at the period's end.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::state::find;
use super::{App, billing, form, webhooks};

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { (title) " - Stripe sandbox" }
                style { "body{font-family:sans-serif;max-width:32rem;margin:2rem auto}button{margin:.25rem}" }
            }
            body { h1 { (title) } (body) p { small { "Stripe sandbox (test mode)" } } }
        }
    }
}

fn html_response(status: StatusCode, title: &str, body: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page(title, body).into_string()).into_response()
}

fn not_found(what: &str) -> Response {
    html_response(StatusCode::NOT_FOUND, "Not found", html! { p { "No such " (what) "." } })
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn money(amount: i64, currency: &str) -> String {
    format!("{}.{:02} {}", amount / 100, amount % 100, currency.to_uppercase())
}

/// The session and the lines to show, from whichever account holds it.
fn checkout_view(app: &App, id: &str) -> Option<(Value, Vec<(String, String)>)> {
    app.with(|s| {
        let account = s.account_holding(id, |a| &a.sessions)?;
        let session = find(&account.sessions, id)?.clone();
        let lines = session["_line_items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|li| {
                let price = find(&account.prices, li["price"].as_str()?)?;
                let name = price["nickname"].as_str().unwrap_or("Subscription").to_string();
                let every = price["recurring"]["interval"].as_str().unwrap_or("month");
                let amount = match (price["unit_amount"].as_i64(), li["quantity"].as_i64()) {
                    (Some(unit), Some(q)) => {
                        format!("{q} × {} / {every}", money(unit, price["currency"].as_str().unwrap_or("usd")))
                    }
                    _ => format!("metered, billed per {every}"),
                };
                Some((name, amount))
            })
            .collect();
        Some((session, lines))
    })
}

fn checkout_markup(id: &str, session: &Value, lines: &[(String, String)], error: Option<&str>) -> Markup {
    let email = session["customer_details"]["email"].as_str().unwrap_or_default();
    html! {
        @if let Some(e) = error { p role="alert" { strong { (e) } } }
        ul { @for (name, amount) in lines { li { (name) ": " (amount) } } }
        form method="post" action={ "/checkout/" (id) "/pay" } {
            label { "Email " input type="email" name="email" value=(email) required; }
            br;
            button type="submit" name="outcome" value="pay" { "Pay" }
            button type="submit" name="outcome" value="decline" { "Pay with a declined card" }
        }
        @if let Some(cancel) = session["cancel_url"].as_str() { p { a href=(cancel) { "Cancel" } } }
    }
}

/// `GET /checkout/{id}`.
pub(crate) async fn checkout_page(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Some((session, lines)) = checkout_view(&app, &id) else { return not_found("Checkout Session") };
    if session["status"] != "open" {
        let status = session["status"].as_str().unwrap_or_default().to_string();
        return html_response(StatusCode::GONE, "Checkout", html! { p { "This Checkout Session is " (status) "." } });
    }
    html_response(StatusCode::OK, "Checkout", checkout_markup(&id, &session, &lines, None))
}

/// `POST /checkout/{id}/pay` (form: `email`, `outcome=pay|decline`): completes the session and redirects (303) to
/// its success_url, or shows the page again with "Your card was declined." (402) and nothing changed.
pub(crate) async fn checkout_pay(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Response {
    let Some((session, lines)) = checkout_view(&app, &id) else { return not_found("Checkout Session") };
    let fields = form::parse(&body).unwrap_or(Value::Null);
    let email = fields["email"].as_str().map(str::to_string);
    if fields["outcome"] == "decline" {
        let markup = checkout_markup(&id, &session, &lines, Some("Your card was declined."));
        return html_response(StatusCode::PAYMENT_REQUIRED, "Checkout", markup);
    }
    let base = app.base_url();
    let (outcome, deliveries) = app.with(|s| {
        let outcome = match s.account_holding(&id, |a| &a.sessions) {
            Some(account) => {
                let r = billing::complete_checkout(account, &id, email.as_deref(), &base);
                if r.is_err() {
                    account.outbox.clear();
                }
                r
            }
            None => Err(super::error::StripeError::invalid("No such Checkout Session.")),
        };
        (outcome, s.take_outbox())
    });
    webhooks::dispatch(&app, deliveries);
    match outcome {
        Ok(Some(success)) => redirect(&success),
        Ok(None) => {
            html_response(StatusCode::OK, "Payment complete", html! { p { "Thanks, your subscription is active." } })
        }
        Err(e) => html_response(StatusCode::BAD_REQUEST, "Checkout", html! { p role="alert" { (e.message) } }),
    }
}

/// `GET /portal/{id}`: the customer's subscriptions that are not canceled, each with its cancel buttons.
pub(crate) async fn portal_page(State(app): State<App>, Path(id): Path<String>) -> Response {
    let view = app.with(|s| {
        let account = s.account_holding(&id, |a| &a.portal_sessions)?;
        let session = find(&account.portal_sessions, &id)?.clone();
        let subs: Vec<Value> = account
            .subscriptions
            .iter()
            .filter(|sub| sub["customer"] == session["customer"] && sub["status"] != "canceled")
            .cloned()
            .collect();
        Some((session, subs))
    });
    let Some((session, subs)) = view else { return not_found("portal session") };
    let markup = html! {
        @if subs.is_empty() { p { "No active subscriptions." } }
        @for sub in &subs {
            @let sid = sub["id"].as_str().unwrap_or_default();
            div {
                p {
                    (sid) " - " (sub["status"].as_str().unwrap_or_default())
                    @if sub["cancel_at_period_end"] == true { " (cancels at the end of the period)" }
                }
                form method="post" action={ "/portal/" (id) "/subscriptions/" (sid) "/cancel" } {
                    button type="submit" name="mode" value="now" { "Cancel now" }
                    button type="submit" name="mode" value="at_period_end" { "Cancel at period end" }
                }
            }
        }
        @if let Some(back) = session["return_url"].as_str() { p { a href=(back) { "Return" } } }
    };
    html_response(StatusCode::OK, "Your subscriptions", markup)
}

/// `POST /portal/{id}/subscriptions/{sub}/cancel` (form `mode=now|at_period_end`, default now), then 303 back to
/// the portal page.
pub(crate) async fn portal_cancel(
    State(app): State<App>,
    Path((id, sub)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let fields = form::parse(&body).unwrap_or(Value::Null);
    let at_period_end = fields["mode"] == "at_period_end";
    let (outcome, deliveries) = app.with(|s| {
        let outcome = match s.account_holding(&id, |a| &a.portal_sessions) {
            Some(account) => {
                let session = find(&account.portal_sessions, &id).cloned().unwrap_or(Value::Null);
                let owned = find(&account.subscriptions, &sub).is_some_and(|x| x["customer"] == session["customer"]);
                let r = if !owned {
                    Err(super::error::StripeError::no_such("subscription", &sub, None))
                } else if at_period_end {
                    let p = serde_json::json!({"cancel_at_period_end": "true"});
                    billing::update_subscription(account, &sub, &p)
                } else {
                    billing::cancel_now(account, &sub, "cancellation_requested")
                };
                if r.is_err() {
                    account.outbox.clear();
                }
                r.map(|_| ())
            }
            None => Err(super::error::StripeError::no_such("portal session", &id, None)),
        };
        (outcome, s.take_outbox())
    });
    webhooks::dispatch(&app, deliveries);
    match outcome {
        Ok(()) => redirect(&format!("/portal/{id}")),
        Err(e) => html_response(e.status, "Your subscriptions", html! { p role="alert" { (e.message) } }),
    }
}
