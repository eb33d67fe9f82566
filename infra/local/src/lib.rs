//! The local stack: template.yaml provisioned into moto, every HTTP function served through the gateway
//! with the authorizer in front, as `./dev up` runs it and as the integration tests start it.

pub mod gateway;
pub mod provision;
pub mod template;
pub mod workers;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use authorizer::Authorizer;
use axum::Router;
use shared::jwt::JwtVerifier;
use shared::tenancy::{Stores, TenancyStore};

pub use provision::{Clients, Provisioned};
pub use template::Template;

/// A provisioned stack, ready to serve.
pub struct Stack {
    pub template: Template,
    pub provisioned: Provisioned,
    pub router: Router,
    pub sdk: aws_config::SdkConfig,
    /// The handlers of the queue-triggered and scheduled functions.
    pub workers: workers::Workers,
}

/// Options for [`Stack::start`].
pub struct Options {
    /// Prefix of every physical resource name; tests use a fresh one each.
    pub prefix: String,
    pub operator_key: String,
    /// Overrides the authorizer's JWT verifier (tests shorten its cache intervals).
    pub jwt: Option<JwtVerifier>,
    /// Where browsers reach this stack (the template's `PublicUrl`), e.g. `http://127.0.0.1:3000`.
    pub public_url: String,
    /// Extra environment for every function, e.g. `TENANTRY_OURA_URL` pointing at a sandbox provider.
    pub extra_env: HashMap<String, String>,
}

impl Stack {
    pub async fn start(sdk: aws_config::SdkConfig, options: Options) -> anyhow::Result<Self> {
        let template = Template::load_default()?;
        let clients = Clients::new(&sdk);
        let parameters = HashMap::from([
            ("OperatorKey".to_owned(), options.operator_key.clone()),
            ("PublicUrl".to_owned(), options.public_url.clone()),
        ]);
        let provisioned = provision::provision(&clients, &template, &options.prefix, parameters).await?;
        let env_of = |logical: &str| -> anyhow::Result<shared::Config> {
            let f = template.function(logical).with_context(|| format!("template has no {logical}"))?;
            let env = provisioned.environment(f)?;
            shared::Config::from_lookup(|k| env.get(k).or_else(|| options.extra_env.get(k)).cloned())
        };
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let store = |c: &shared::Config| TenancyStore::new(dynamodb.clone(), &c.tenancy_table);
        let stores = |c: &shared::Config| Stores::from_config(c, &sdk);

        let auth_config = env_of("AuthorizerFunction")?;
        let mut authorizer = Authorizer::new(&auth_config, store(&auth_config), shared::jwt::http_client());
        if let Some(jwt) = options.jwt {
            authorizer = authorizer.with_jwt_verifier(jwt);
        }
        let control = env_of("ControlFunction")?;
        let data = env_of("DataFunction")?;
        let connect = env_of("ConnectFunction")?;
        let public_url = |c: &shared::Config| c.public_url.clone().context("TENANTRY_PUBLIC_URL");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let events = |c: &shared::Config| -> anyhow::Result<shared::events::Events> {
            Ok(shared::events::Events::new(sqs.clone(), c.notify_queue_url.clone().context("NOTIFY_QUEUE_URL")?))
        };
        let control_state = control::AppState {
            stores: stores(&control),
            allow_loopback_jwks: true,
            vault: Arc::new(shared::aws::vault(&control, &sdk)?),
            public_url: public_url(&control)?,
            events: events(&control)?,
            dead_letters: control::dead_letters::DeadLetters::from_config(sqs.clone(), &control),
            meter_table: control.meter_table.clone().context("METER_TABLE")?,
        };
        let queue = |c: &shared::Config| -> anyhow::Result<shared::sync::SyncQueue> {
            Ok(shared::sync::SyncQueue::new(sqs.clone(), c.sync_queue_url.clone().context("SYNC_QUEUE_URL")?))
        };
        let connect_state = connect::AppState {
            stores: stores(&connect),
            vault: Arc::new(shared::aws::vault(&connect, &sdk)?),
            http: reqwest::Client::new(),
            public_url: public_url(&connect)?,
            providers: connect.providers.clone(),
            sync: queue(&connect)?,
            events: events(&connect)?,
        };
        let hooks = env_of("WebhooksFunction")?;
        let webhooks_state = webhooks::AppState {
            stores: stores(&hooks),
            vault: Arc::new(shared::aws::vault(&hooks, &sdk)?),
            sync: queue(&hooks)?,
        };
        let bill = env_of("BillingFunction")?;
        let billing_router = billing::router(billing::AppState {
            stores: stores(&bill),
            vault: Arc::new(shared::aws::vault(&bill, &sdk)?),
            stripe_url: options.extra_env.get(billing::STRIPE_URL_VAR).cloned(),
            meter_table: bill.meter_table.clone().context("METER_TABLE")?,
        });
        let sync = env_of("SyncWorkerFunction")?;
        let worker = Arc::new(sync_worker::Worker {
            stores: stores(&sync),
            vault: Arc::new(shared::aws::vault(&sync, &sdk)?),
            http: reqwest::Client::new(),
            providers: sync.providers.clone(),
            queue: queue(&sync)?,
            data_table: sync.data_table.clone().context("DATA_TABLE")?,
            events: events(&sync)?,
        });
        let sync_handler: workers::QueueHandler = Arc::new(move |event| {
            let worker = worker.clone();
            Box::pin(async move { Ok(worker.handle(event).await) })
        });
        let notify = env_of("NotifierFunction")?;
        let notifier = Arc::new(notifier::Notifier {
            stores: stores(&notify),
            vault: Arc::new(shared::aws::vault(&notify, &sdk)?),
            http: notifier::http_client(),
            queue: events(&notify)?,
            dead_letters: shared::events::Events::new(
                sqs.clone(),
                notify.notify_dead_letters_url.clone().context("NOTIFY_DEAD_LETTERS_URL")?,
            ),
            // Tests shorten the retries through `extra_env`; the default is 24 hours.
            policy: notifier::Policy::from_lookup(|k| options.extra_env.get(k).cloned()),
        });
        let notify_handler: workers::QueueHandler = Arc::new(move |event| {
            let notifier = notifier.clone();
            Box::pin(async move { Ok(notifier.handle(event).await) })
        });
        let plan = env_of("SyncSchedulerFunction")?;
        let scheduler = Arc::new(
            sync_scheduler::Scheduler::new(
                shared::connect::ConnectStore::new(aws_sdk_dynamodb::Client::new(&sdk), &plan.tenancy_table),
                queue(&plan)?,
            )
            .with_keeper(sync_scheduler::Keeper::new(
                shared::subscriptions::SubscriptionStore::new(aws_sdk_dynamodb::Client::new(&sdk), &plan.tenancy_table),
                shared::connect::ConnectStore::new(aws_sdk_dynamodb::Client::new(&sdk), &plan.tenancy_table),
                Arc::new(shared::aws::vault(&plan, &sdk)?),
                plan.providers.clone(),
                public_url(&plan)?,
            )),
        );
        let tick: workers::TickHandler = Arc::new(move || {
            let scheduler = scheduler.clone();
            Box::pin(async move { scheduler.tick().await.map(|_| ()) })
        });
        let import = env_of("HealthImportFunction")?;
        let importer = Arc::new(health_import::handler::Handler {
            stores: stores(&import),
            s3: shared::aws::s3(&sdk),
            bucket: import.import_bucket.clone().context("IMPORT_BUCKET")?,
            sqs: sqs.clone(),
            queue_url: import.import_queue_url.clone().context("IMPORT_QUEUE_URL")?,
            data_table: import.data_table.clone().context("DATA_TABLE")?,
            events: events(&import)?,
            slice: std::time::Duration::from_secs(840),
            // Tests force resumes with it; Lambda never sets it.
            pause_every: options.extra_env.get("HEALTH_IMPORT_PAUSE_EVERY").and_then(|v| v.parse().ok()),
        });
        let import_handler: workers::QueueHandler = Arc::new(move |event| {
            let importer = importer.clone();
            Box::pin(async move { Ok(importer.handle(event).await) })
        });
        let usage = env_of("UsageReporterFunction")?;
        let usage_table = usage.meter_table.clone().context("METER_TABLE")?;
        let reporter = Arc::new(usage_reporter::Reporter {
            meter: shared::meter::MeterStore::new(aws_sdk_dynamodb::Client::new(&sdk), &usage_table),
            stores: stores(&usage),
            meter_table: usage_table,
            vault: Arc::new(shared::aws::vault(&usage, &sdk)?),
            sqs: sqs.clone(),
            queue_url: usage.usage_queue_url.clone().context("USAGE_QUEUE_URL")?,
            stripe_url: options.extra_env.get(billing::STRIPE_URL_VAR).cloned(),
            // Tests shorten it through `extra_env`.
            claim_secs: usage_reporter::claim_secs(|k| options.extra_env.get(k).cloned()),
        });
        let usage_sweep: workers::TickHandler = {
            let reporter = reporter.clone();
            Arc::new(move || {
                let reporter = reporter.clone();
                Box::pin(async move { reporter.sweep().await.map(|_| ()) })
            })
        };
        let usage_handler: workers::QueueHandler = Arc::new(move |event| {
            let reporter = reporter.clone();
            Box::pin(async move { Ok(reporter.handle(event).await) })
        });
        // The purge reads PURGE_QUEUE_URL and EXPORT_BUCKET beside the common configuration.
        let purge_vars =
            provisioned.environment(template.function("PurgeFunction").context("template has no PurgeFunction")?)?;
        let purge_lookup = |k: &str| purge_vars.get(k).or_else(|| options.extra_env.get(k)).cloned();
        let purger = Arc::new(purge::Purger::new(
            &shared::Config::from_lookup(purge_lookup)?,
            &sdk,
            purge::Settings::from_lookup(purge_lookup)?,
        )?);
        let purge_router = purge::router(purge::AppState { stores: purger.stores.clone() });
        let purge_sweep: workers::TickHandler = {
            let purger = purger.clone();
            Arc::new(move || {
                let purger = purger.clone();
                Box::pin(async move { purger.sweep().await.map(|_| ()) })
            })
        };
        let purge_handler: workers::QueueHandler = Arc::new(move |event| {
            let purger = purger.clone();
            Box::pin(async move { Ok(purger.handle(event).await) })
        });
        let export_fn = template.function("ExportFunction").context("template has no ExportFunction")?;
        let export_env = provisioned.environment(export_fn)?;
        let exporter =
            export::Exporter::from_lookup(|k| export_env.get(k).or_else(|| options.extra_env.get(k)).cloned(), &sdk)?;
        let export_router = export::router(exporter.clone());
        let exporter = Arc::new(exporter);
        let export_handler: workers::QueueHandler = Arc::new(move |event| {
            let exporter = exporter.clone();
            Box::pin(async move { Ok(exporter.handle(event).await) })
        });
        let workers = workers::Workers {
            queues: HashMap::from([
                ("SyncWorkerFunction".to_owned(), sync_handler),
                ("NotifierFunction".to_owned(), notify_handler),
                ("HealthImportFunction".to_owned(), import_handler),
                ("UsageReporterFunction".to_owned(), usage_handler),
                ("PurgeFunction".to_owned(), purge_handler),
                ("ExportFunction".to_owned(), export_handler),
            ]),
            ticks: HashMap::from([
                ("SyncSchedulerFunction".to_owned(), tick),
                ("UsageReporterFunction".to_owned(), usage_sweep),
                ("PurgeFunction".to_owned(), purge_sweep),
            ]),
        };
        let functions = HashMap::from([
            ("ControlFunction".to_owned(), control::router(control_state)),
            (
                "DataFunction".to_owned(),
                data::router(data::AppState {
                    stores: stores(&data),
                    data_table: data.data_table.clone().context("DATA_TABLE")?,
                    s3: shared::aws::s3(&sdk),
                    import_bucket: data.import_bucket.clone().context("IMPORT_BUCKET")?,
                }),
            ),
            ("ConnectFunction".to_owned(), connect::router(connect_state)),
            ("WebhooksFunction".to_owned(), webhooks::router(webhooks_state)),
            ("BillingFunction".to_owned(), billing_router),
            ("PurgeFunction".to_owned(), purge_router),
            ("ExportFunction".to_owned(), export_router),
        ]);
        let authorizer = Arc::new(authorizer);
        let metering = env_of("MeterFunction")?;
        let meter_state = meter::AppState::new(
            stores(&metering),
            metering.meter_table.clone().context("METER_TABLE")?,
            Arc::new(shared::aws::vault(&metering, &sdk)?),
            events(&metering)?,
            reqwest::Client::new(),
            metering.llm_urls.clone(),
            // Tests shorten timeouts and the breaker's cooldown through `extra_env`.
            meter::Tuning::from_lookup(|k| options.extra_env.get(k).cloned()),
            authorizer.clone(),
        );
        let router = gateway::gateway(&template, &functions, authorizer)?;
        // The meter sits behind its own Function URL in AWS; here it shares the API's port.
        let router = gateway::function_url(router, &meter::routes().served(), meter::router(meter_state));
        Ok(Self { template, provisioned, router, sdk, workers })
    }

    /// Starts the queue pollers and schedule ticks of the template's event-driven functions.
    pub fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        workers::spawn(&self.template, &self.provisioned, sqs, &self.workers, workers::default_tick_cap())
    }

    /// Serves on `listener` until the future is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        axum::serve(listener, self.router).await.context("serving the local stack")
    }
}
