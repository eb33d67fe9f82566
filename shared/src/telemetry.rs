//! Logging: JSON lines in Lambda (CloudWatch reads fields), human lines locally; `RUST_LOG` filters.
//!
//! In JSON, the fields of every span the event is in are lifted to the top level of the line (the innermost
//! span wins a clash, the event's own fields win over any span), so each line of a request carries the
//! `request_id` and `tenant_id` of the request span (`shared::http::request_id_layer`), and each line of a
//! queue message those of the message span (`shared::batch::partial`, tenant via [`record_tenant`]).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber once; later calls are harmless (tests start many stacks).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let _ = if in_lambda {
        json_subscriber(filter, std::io::stdout).try_init()
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init()
    };
}

/// The Lambda subscriber: one flat JSON object per line, written to `writer`.
pub fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<JsonFields, FlatJson, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(writer)
}

/// Names the tenant of the current span (a queue message's, whose tenant is known only once its body is read).
pub fn record_tenant(tenant: &impl fmt::Display) {
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
}

/// `{"level": .., "target": .., "span": <innermost span name>, <span fields>.., "message": .., <event fields>..}`.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                line.insert("span".into(), Value::from(span.name()));
                let extensions = span.extensions();
                // JsonFields stores each span's fields as a JSON object (empty when it has none).
                let fields = extensions.get::<FormattedFields<N>>().map(|f| f.fields.as_str()).unwrap_or_default();
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Visitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a subscriber writes, for tests that read log lines.
    #[derive(Clone, Default)]
    pub struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        pub fn parsed(&self) -> Vec<Value> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
                .collect()
        }
    }

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn span_fields_are_lifted_to_the_top_of_each_json_line() {
        let lines = Lines::default();
        let subscriber = json_subscriber(EnvFilter::new("debug"), lines.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("message", request_id = "msg-1", tenant_id = tracing::field::Empty);
            let _outer = outer.enter();
            tracing::info!("before the tenant is known");
            record_tenant(&"ten_1");
            let inner = tracing::info_span!("run", job_id = "job-1", tenant_id = "ten_1");
            let _inner = inner.enter();
            tracing::warn!(items = 3, ok = true, "inside");
        });
        let parsed = lines.parsed();
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed[0]["request_id"], "msg-1");
        assert!(parsed[0].get("tenant_id").is_none(), "{}", parsed[0]);
        assert_eq!(parsed[0]["message"], "before the tenant is known");
        assert_eq!(parsed[1]["request_id"], "msg-1");
        assert_eq!(parsed[1]["tenant_id"], "ten_1");
        assert_eq!(parsed[1]["job_id"], "job-1");
        assert_eq!(parsed[1]["span"], "run");
        assert_eq!(parsed[1]["level"], "WARN");
        assert_eq!(parsed[1]["items"], 3);
        assert_eq!(parsed[1]["ok"], true);
    }
}
