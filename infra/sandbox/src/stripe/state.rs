//! What the Stripe sandbox remembers: accounts (one per secret key) with their objects as the JSON Stripe renders,
//! saved idempotent responses, meter events, events and webhook deliveries; the fault switches and held deliveries.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `prefix` + `len` random letters and digits, the shape of Stripe ids (`cus_NffrFeUfNV2Hib`).
pub(crate) fn new_id(prefix: &str, len: usize) -> String {
    let tail: String =
        rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(len).map(char::from).collect();
    format!("{prefix}{tail}")
}

/// The last four characters of a key, for state and messages (`sk_test_****abcd`).
pub(crate) fn key_suffix(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// One webhook delivery to make: this event to this endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Delivery {
    pub account: String,
    pub endpoint: String,
    pub event: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One delivery attempt as it went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeliveryRecord {
    pub event: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: String,
    pub url: String,
    pub attempt: u32,
    /// The receiver's HTTP status, `null` when it could not be reached.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: i64,
}

/// One accepted meter event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MeterRecord {
    pub identifier: String,
    pub event_name: String,
    pub customer: String,
    pub value: String,
    pub timestamp: i64,
    pub created: i64,
}

/// A saved response for an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub request: String,
    pub body_hash: String,
    pub status: u16,
    pub body: Value,
    pub at: i64,
}

/// A webhook endpoint with its signing secret.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub object: Value,
    pub secret: String,
}

impl Endpoint {
    pub fn id(&self) -> &str {
        self.object["id"].as_str().unwrap_or_default()
    }

    pub fn url(&self) -> &str {
        self.object["url"].as_str().unwrap_or_default()
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.object["enabled_events"]
            .as_array()
            .is_some_and(|all| all.iter().any(|e| e == "*" || e.as_str() == Some(event_type)))
    }
}

/// One Stripe account: everything one secret key sees.
#[derive(Debug)]
pub(crate) struct Account {
    pub id: String,
    pub key: String,
    pub customers: Vec<Value>,
    pub products: Vec<Value>,
    pub prices: Vec<Value>,
    pub sessions: Vec<Value>,
    pub subscriptions: Vec<Value>,
    pub invoices: Vec<Value>,
    pub portal_sessions: Vec<Value>,
    pub endpoints: Vec<Endpoint>,
    pub events: Vec<Value>,
    pub meters: Vec<Value>,
    pub meter_events: Vec<MeterRecord>,
    pub meter_duplicates: Vec<String>,
    pub idempotency: HashMap<String, Saved>,
    pub deliveries: Vec<DeliveryRecord>,
    /// Deliveries made by the request in progress, sent once it answers.
    pub outbox: Vec<Delivery>,
}

/// Finds an object by id in one of an account's collections.
pub(crate) fn find<'a>(all: &'a [Value], id: &str) -> Option<&'a Value> {
    all.iter().find(|o| o["id"] == id)
}

pub(crate) fn find_mut<'a>(all: &'a mut [Value], id: &str) -> Option<&'a mut Value> {
    all.iter_mut().find(|o| o["id"] == id)
}

impl Account {
    pub fn new(key: String) -> Self {
        let mut account = Account {
            id: new_id("acct_", 16),
            key,
            customers: Vec::new(),
            products: Vec::new(),
            prices: Vec::new(),
            sessions: Vec::new(),
            subscriptions: Vec::new(),
            invoices: Vec::new(),
            portal_sessions: Vec::new(),
            endpoints: Vec::new(),
            events: Vec::new(),
            meters: Vec::new(),
            meter_events: Vec::new(),
            meter_duplicates: Vec::new(),
            idempotency: HashMap::new(),
            deliveries: Vec::new(),
            outbox: Vec::new(),
        };
        account.seed_prices();
        account
    }

    /// Every account starts with one product and two monthly prices (`lookup_key` `basic_monthly`, 9.00 USD, and
    /// `pro_monthly`, 29.00 USD), so a test can open a checkout without setting up a catalogue.
    fn seed_prices(&mut self) {
        let t = now();
        let product = super::objects::product("Sandbox plan", t);
        let product_id = product["id"].as_str().unwrap_or_default().to_string();
        self.products.push(product);
        for (lookup, nickname, amount) in [("basic_monthly", "Basic", 900), ("pro_monthly", "Pro", 2900)] {
            let price = super::objects::price(super::objects::PriceSpec {
                product: product_id.clone(),
                currency: "usd".into(),
                unit_amount: Some(amount),
                interval: Some(("month".into(), 1)),
                usage_type: "licensed".into(),
                meter: None,
                nickname: Some(nickname.into()),
                lookup_key: Some(lookup.into()),
                metadata: json!({}),
                created: t,
            });
            self.prices.push(price);
        }
        // And a meter of AI tokens (`event_name` `tenantry_tokens`) with a metered price on it
        // (`lookup_key` `tokens_metered`), for usage-based plans.
        let meter = super::objects::meter("AI tokens", "tenantry_tokens", "sum", t);
        let meter_id = meter["id"].as_str().map(str::to_string);
        self.meters.push(meter);
        self.prices.push(super::objects::price(super::objects::PriceSpec {
            product: product_id,
            currency: "usd".into(),
            unit_amount: Some(1),
            interval: Some(("month".into(), 1)),
            usage_type: "metered".into(),
            meter: meter_id,
            nickname: Some("Tokens".into()),
            lookup_key: Some("tokens_metered".into()),
            metadata: json!({}),
            created: t,
        }));
    }

    /// Records an event and queues a delivery to every endpoint that listens for its type. Returns the event id.
    pub fn emit(&mut self, kind: &str, object: Value, previous: Option<Value>) -> String {
        let listeners: Vec<String> =
            self.endpoints.iter().filter(|e| e.wants(kind)).map(|e| e.id().to_string()).collect();
        let event = super::objects::event(kind, object, previous, listeners.len());
        let id = event["id"].as_str().unwrap_or_default().to_string();
        self.events.push(event);
        for endpoint in listeners {
            self.outbox.push(Delivery {
                account: self.id.clone(),
                endpoint,
                event: id.clone(),
                kind: kind.to_string(),
            });
        }
        id
    }

    pub fn event(&self, id: &str) -> Option<&Value> {
        find(&self.events, id)
    }

    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.id() == id)
    }

    /// Sum and count of the accepted meter events per (event_name, customer).
    pub fn meter_totals(&self) -> Vec<Value> {
        let mut totals: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
        for m in &self.meter_events {
            let entry = totals.entry((m.event_name.clone(), m.customer.clone())).or_default();
            entry.0 += m.value.parse::<f64>().unwrap_or(0.0);
            entry.1 += 1;
        }
        totals
            .into_iter()
            .map(|((event_name, customer), (total, count))| {
                json!({"event_name": event_name, "customer": customer, "total": total, "count": count})
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let endpoints: Vec<Value> = self.endpoints.iter().map(|e| e.object.clone()).collect();
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|e| json!({"id": e["id"], "type": e["type"], "object": e["data"]["object"]["id"], "created": e["created"]}))
            .collect();
        json!({
            "account": self.id,
            "key_suffix": key_suffix(&self.key),
            "customers": self.customers,
            "prices": self.prices,
            "checkout_sessions": self.sessions,
            "subscriptions": self.subscriptions,
            "invoices": self.invoices,
            "webhook_endpoints": endpoints,
            "events": events,
            "meter_events": {
                "recorded": self.meter_events,
                "duplicates": self.meter_duplicates,
                "totals": self.meter_totals(),
            },
            "deliveries": self.deliveries,
        })
    }
}

/// The API fault switches: counted switches fail the next n API requests (`/v1/...`), in the order hang,
/// rate_limited, server_error; `slow_ms` delays every API request until changed.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Faults {
    pub server_error: u64,
    pub rate_limited: u64,
    pub hang: u64,
    pub slow_ms: u64,
}

/// `POST /sandbox/faults`: a partial update; absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    server_error: Option<u64>,
    rate_limited: Option<u64>,
    hang: Option<u64>,
    slow_ms: Option<u64>,
}

impl Faults {
    pub fn apply(&mut self, u: FaultsUpdate) {
        if let Some(v) = u.server_error {
            self.server_error = v;
        }
        if let Some(v) = u.rate_limited {
            self.rate_limited = v;
        }
        if let Some(v) = u.hang {
            self.hang = v;
        }
        if let Some(v) = u.slow_ms {
            self.slow_ms = v;
        }
    }
}

/// What one API request meets: a fault, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Hang,
    RateLimited,
    ServerError,
}

#[derive(Debug, Default)]
pub(crate) struct StripeState {
    pub accounts: BTreeMap<String, Account>,
    /// Secret key -> account id.
    pub keys: HashMap<String, String>,
    /// Keys of accounts closed with `DELETE /sandbox/accounts/{id}`: 401 from then on.
    pub revoked: HashSet<String>,
    pub faults: Faults,
    /// While true, deliveries wait in `held` until `POST /sandbox/deliver`.
    pub hold: bool,
    pub held: Vec<Delivery>,
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub hung: u64,
}

impl StripeState {
    /// The account of a well-formed test key, made on first use.
    pub fn account_for_key(&mut self, key: &str) -> &mut Account {
        let id = match self.keys.get(key) {
            Some(id) => id.clone(),
            None => {
                let account = Account::new(key.to_string());
                let id = account.id.clone();
                self.keys.insert(key.to_string(), id.clone());
                self.accounts.insert(id.clone(), account);
                id
            }
        };
        self.accounts.entry(id.clone()).or_insert_with(|| Account::new(key.to_string()))
    }

    /// Takes the next fault for an API request (counted switches are used up).
    pub fn next_fault(&mut self) -> Fault {
        let f = &mut self.faults;
        if f.hang > 0 {
            f.hang -= 1;
            self.hung += 1;
            Fault::Hang
        } else if f.rate_limited > 0 {
            f.rate_limited -= 1;
            Fault::RateLimited
        } else if f.server_error > 0 {
            f.server_error -= 1;
            Fault::ServerError
        } else {
            Fault::None
        }
    }

    /// The account holding an object of `kind` (a collection picker) with this id.
    pub fn account_holding(&mut self, id: &str, pick: impl Fn(&Account) -> &[Value]) -> Option<&mut Account> {
        let acct = self.accounts.values().find(|a| find(pick(a), id).is_some()).map(|a| a.id.clone())?;
        self.accounts.get_mut(&acct)
    }

    /// Deliveries queued by the last request, across accounts; held ones go to `held` instead.
    pub fn take_outbox(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for account in self.accounts.values_mut() {
            out.append(&mut account.outbox);
        }
        if self.hold {
            self.held.append(&mut out);
        }
        out
    }

    pub fn to_json(&self, only: Option<&str>) -> Value {
        let accounts: Vec<Value> =
            self.accounts.values().filter(|a| only.is_none_or(|id| a.id == id)).map(Account::to_json).collect();
        json!({
            "requests": self.requests,
            "by_status": self.by_status,
            "hung": self.hung,
            "faults": self.faults,
            "hold": self.hold,
            "held": self.held,
            "accounts": accounts,
        })
    }
}
