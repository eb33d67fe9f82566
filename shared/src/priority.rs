//! Source priority: where a user's sources overlap (an Oura ring and a Garmin watch both count steps), each
//! day's value of a metric comes from ONE source, the first in the tenant's order that has it, never a sum.
//! A tenant sets a default order and per-metric orders (`PUT /v1/settings/source-priority`); sources it does
//! not list follow in the built-in order (dedicated wearables first, phones last).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::dynamo::{Item, get_s, s, unavailable};
use crate::ids::TenantId;
use crate::model::{DailyRecord, Metric, SourceName};
use crate::tenancy::StoreError;

/// The order used for sources a tenant did not list.
pub const BUILT_IN: [&str; 8] =
    ["garmin", "oura", "whoop", "polar", "withings", "google_health", "strava", "apple_health"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePriority {
    /// The order for every metric without its own.
    #[serde(default)]
    pub default: Vec<SourceName>,
    /// Per-metric orders.
    #[serde(default)]
    pub metrics: BTreeMap<Metric, Vec<SourceName>>,
    /// Within Apple Health, which devices win where their samples overlap: case-insensitive words matched
    /// against the sample's source name, device name and model. Empty means Apple Health's own default, the
    /// Watch before the iPhone (`["watch", "iphone"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apple_health_devices: Vec<String>,
}

impl SourcePriority {
    /// Refuses a list that names a source twice (the order would be ambiguous).
    pub fn check(&self) -> Result<(), String> {
        if self.apple_health_devices.iter().any(|d| d.trim().is_empty() || d.len() > 60) {
            return Err("apple_health_devices are words like \"watch\" or \"iphone\" (1 to 60 characters)".into());
        }
        let lists = std::iter::once(("default".to_owned(), &self.default))
            .chain(self.metrics.iter().map(|(m, l)| (m.as_str().to_owned(), l)));
        for (name, list) in lists {
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = list.iter().find(|s| !seen.insert(*s)) {
                return Err(format!("`{name}` lists `{dup}` twice"));
            }
        }
        Ok(())
    }

    /// The rank of `source` for `metric`: lower wins.
    /// The metric's own list first, then the tenant's default, then the built-in order; the name breaks ties.
    fn rank<'a>(&self, metric: Metric, source: &'a SourceName) -> (usize, usize, usize, &'a str) {
        let at = |list: &[SourceName]| list.iter().position(|s| s == source).unwrap_or(usize::MAX);
        let own = self.metrics.get(&metric).map_or(usize::MAX, |l| at(l));
        let built_in = BUILT_IN.iter().position(|s| *s == source.as_str()).unwrap_or(usize::MAX);
        (own, at(&self.default), built_in, source.as_str())
    }

    /// Merges one day's records of several sources: per metric, the value of the highest-ranked source
    /// that has one. Returns the values and, per metric, the source chosen.
    pub fn merge<'a>(
        &self,
        records: impl IntoIterator<Item = &'a DailyRecord>,
    ) -> (BTreeMap<Metric, f64>, BTreeMap<Metric, SourceName>) {
        let mut best: HashMap<Metric, (f64, &'a SourceName)> = HashMap::new();
        for r in records {
            for (m, v) in &r.metrics {
                let better = best.get(m).is_none_or(|(_, cur)| self.rank(*m, &r.source.name) < self.rank(*m, cur));
                if better {
                    best.insert(*m, (*v, &r.source.name));
                }
            }
        }
        let values = best.iter().map(|(m, (v, _))| (*m, *v)).collect();
        let sources = best.into_iter().map(|(m, (_, s))| (m, s.clone())).collect();
        (values, sources)
    }
}

/// The tenant's priority item (TenancyTable, sk `source_priority`, the JSON in `doc`).
#[derive(Clone, Debug)]
pub struct PriorityStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl PriorityStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// The tenant's priority; the built-in order when it set none.
    pub async fn get(&self, tenant: &TenantId) -> Result<SourcePriority, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s("source_priority"))
            .send()
            .await
            .map_err(unavailable("reading the source priority"))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i: &Item| get_s(i, "doc"))
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default())
    }

    pub async fn put(&self, tenant: &TenantId, p: &SourcePriority) -> Result<(), StoreError> {
        let doc = serde_json::to_string(p).map_err(|e| StoreError::Unavailable(e.into()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s("source_priority"))
            .item("doc", s(doc))
            .item("updated_at", s(crate::time::now_rfc3339()))
            .send()
            .await
            .map_err(unavailable("storing the source priority"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    fn record(source: &str, steps: f64, hr: Option<f64>) -> DailyRecord {
        let name = SourceName::parse(source).unwrap_or_else(|e| panic!("{e}"));
        let mut d = DailyRecord::new(time::macros::date!(2026 - 03 - 04), Source { name, device: None });
        d.set(Metric::Steps, Some(steps)).set(Metric::RestingHeartRate, hr);
        d
    }

    fn names(list: &[&str]) -> Vec<SourceName> {
        list.iter().filter_map(|s| SourceName::parse(s).ok()).collect()
    }

    #[test]
    fn overlapping_sources_give_one_value_per_metric_never_a_sum() {
        let days = [record("apple_health", 9100.0, None), record("oura", 8200.0, Some(52.0))];
        let (values, sources) = SourcePriority::default().merge(&days);
        assert_eq!(values[&Metric::Steps], 8200.0, "built-in order puts the ring before the phone");
        assert_eq!(sources[&Metric::Steps].as_str(), "oura");
        assert_eq!(values[&Metric::RestingHeartRate], 52.0);
    }

    #[test]
    fn a_per_metric_order_beats_the_default_and_a_missing_value_falls_through() {
        let p = SourcePriority {
            default: names(&["oura"]),
            metrics: BTreeMap::from([(Metric::Steps, names(&["apple_health", "oura"]))]),
            apple_health_devices: Vec::new(),
        };
        let days = [record("apple_health", 9100.0, None), record("oura", 8200.0, Some(52.0))];
        let (values, sources) = p.merge(&days);
        assert_eq!(values[&Metric::Steps], 9100.0);
        assert_eq!(sources[&Metric::Steps].as_str(), "apple_health");
        assert_eq!(sources[&Metric::RestingHeartRate].as_str(), "oura", "apple_health had none");
    }

    #[test]
    fn a_source_listed_twice_is_refused() {
        let p = SourcePriority { default: names(&["oura", "oura"]), ..SourcePriority::default() };
        assert!(p.check().is_err_and(|e| e.contains("oura")));
    }
}
