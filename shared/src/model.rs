//! The normalized data model every provider's data is mapped into (DESIGN.md, "Data model"): daily summaries,
//! sleep sessions, workouts and time-stamped samples. Every value keeps its source; days are the user's local
//! calendar dates, kept with the UTC offset they were recorded at. Readers (`crate::readers`) produce these,
//! `crate::sync::DataStore` stores them, the data function serves them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, UtcOffset};

/// A daily metric. The names are the API's (`?metrics=steps,hrv_ms`) and the stored attribute names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Steps,
    DistanceM,
    ActiveEnergyKcal,
    TotalEnergyKcal,
    RestingHeartRate,
    HrvMs,
    SleepTotalMin,
    SleepDeepMin,
    SleepRemMin,
    SleepLightMin,
    SleepAwakeMin,
    Spo2Pct,
    WeightKg,
    ReadinessScore,
    ActivityScore,
    SleepScore,
}

impl Metric {
    pub const ALL: [Metric; 16] = [
        Metric::Steps,
        Metric::DistanceM,
        Metric::ActiveEnergyKcal,
        Metric::TotalEnergyKcal,
        Metric::RestingHeartRate,
        Metric::HrvMs,
        Metric::SleepTotalMin,
        Metric::SleepDeepMin,
        Metric::SleepRemMin,
        Metric::SleepLightMin,
        Metric::SleepAwakeMin,
        Metric::Spo2Pct,
        Metric::WeightKg,
        Metric::ReadinessScore,
        Metric::ActivityScore,
        Metric::SleepScore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Steps => "steps",
            Self::DistanceM => "distance_m",
            Self::ActiveEnergyKcal => "active_energy_kcal",
            Self::TotalEnergyKcal => "total_energy_kcal",
            Self::RestingHeartRate => "resting_heart_rate",
            Self::HrvMs => "hrv_ms",
            Self::SleepTotalMin => "sleep_total_min",
            Self::SleepDeepMin => "sleep_deep_min",
            Self::SleepRemMin => "sleep_rem_min",
            Self::SleepLightMin => "sleep_light_min",
            Self::SleepAwakeMin => "sleep_awake_min",
            Self::Spo2Pct => "spo2_pct",
            Self::WeightKg => "weight_kg",
            Self::ReadinessScore => "readiness_score",
            Self::ActivityScore => "activity_score",
            Self::SleepScore => "sleep_score",
        }
    }

    /// Parses a metric name; the error lists the known ones.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|m| m.as_str()).collect();
            format!("unknown metric `{raw}`; known: {}", known.join(", "))
        })
    }

    /// Sums over a day (steps, energy) rather than a level (heart rate, a score): only these could ever be
    /// double counted by adding sources, which is what source priority prevents.
    pub fn is_additive(self) -> bool {
        matches!(
            self,
            Self::Steps | Self::DistanceM | Self::ActiveEnergyKcal | Self::TotalEnergyKcal | Self::SleepTotalMin
        )
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where values come from: a provider (`oura`, `whoop`, ...) or `apple_health`; lowercase letters, digits
/// and `_`. Source priority is per source name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceName(Arc<str>);

impl SourceName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 40
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok { Ok(Self(raw.into())) } else { Err(format!("`{raw}` is not a source name like `oura`")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The source of everything imported from Apple Health exports and pushes.
    pub fn apple_health() -> Self {
        Self("apple_health".into())
    }
}

impl From<crate::providers::ProviderId> for SourceName {
    fn from(p: crate::providers::ProviderId) -> Self {
        Self(p.as_str().into())
    }
}

impl TryFrom<String> for SourceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SourceName> for String {
    fn from(s: SourceName) -> String {
        s.0.to_string()
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source and, when known, the device or app within it ("Oura Ring Gen3", "Apple Watch"). Both are shared
/// strings: an import emits millions of samples from a handful of sources, and a clone is a counter bump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub name: SourceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Arc<str>>,
}

impl Source {
    pub fn provider(p: crate::providers::ProviderId) -> Self {
        Self { name: p.into(), device: None }
    }
}

/// One local day of one user from one source. A reader may return several records for one day and source
/// (Oura's activity, sleep and readiness come from different calls); the store merges their metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyRecord {
    #[serde(with = "crate::time::day")]
    pub day: Date,
    #[serde(with = "crate::time::offset", default)]
    pub utc_offset: Option<UtcOffset>,
    pub source: Source,
    pub metrics: BTreeMap<Metric, f64>,
}

impl DailyRecord {
    pub fn new(day: Date, source: Source) -> Self {
        Self { day, utc_offset: None, source, metrics: BTreeMap::new() }
    }

    /// Sets a metric when the provider sent a value (`None` leaves it unset, never zero).
    pub fn set(&mut self, metric: Metric, value: Option<f64>) -> &mut Self {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.metrics.insert(metric, v);
        }
        self
    }
}

/// One sleep period. `day` is the local date the user woke up on (Oura's and WHOOP's convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SleepSession {
    /// The provider's id of this period, so a re-sync rewrites the same item.
    pub id: String,
    pub source: Source,
    #[serde(with = "crate::time::day")]
    pub day: Date,
    #[serde(with = "crate::time::instant")]
    pub start: OffsetDateTime,
    #[serde(with = "crate::time::instant")]
    pub end: OffsetDateTime,
    #[serde(with = "crate::time::offset", default)]
    pub utc_offset: Option<UtcOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_sleep_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rem_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awake_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_heart_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowest_heart_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_hrv_ms: Option<f64>,
}

impl SleepSession {
    pub fn new(id: impl Into<String>, source: Source, day: Date, start: OffsetDateTime, end: OffsetDateTime) -> Self {
        Self {
            id: id.into(),
            source,
            day,
            start,
            end,
            utc_offset: Some(start.offset()),
            total_sleep_min: None,
            deep_min: None,
            rem_min: None,
            light_min: None,
            awake_min: None,
            efficiency_pct: None,
            avg_heart_rate: None,
            lowest_heart_rate: None,
            avg_hrv_ms: None,
        }
    }
}

/// The kinds of workout the API names; a provider's own name is kept in `Workout::provider_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sport {
    Running,
    Walking,
    Hiking,
    Cycling,
    Swimming,
    Rowing,
    Strength,
    Yoga,
    Hiit,
    Other,
}

impl Sport {
    /// Maps a provider's activity name (`Run`, `running`, `RUNNING`, `Ride`, `road_biking`...) to a sport.
    pub fn from_name(raw: &str) -> Self {
        let s = raw.to_ascii_lowercase();
        let has = |w: &[&str]| w.iter().any(|w| s.contains(w));
        if has(&["run", "jog"]) {
            Self::Running
        } else if has(&["walk"]) {
            Self::Walking
        } else if has(&["hik"]) {
            Self::Hiking
        } else if has(&["cycl", "bik", "ride", "spinning"]) {
            Self::Cycling
        } else if has(&["swim"]) {
            Self::Swimming
        } else if has(&["row"]) {
            Self::Rowing
        } else if has(&["strength", "weight", "lift", "functional"]) {
            Self::Strength
        } else if has(&["yoga", "pilates"]) {
            Self::Yoga
        } else if has(&["hiit", "interval"]) {
            Self::Hiit
        } else {
            Self::Other
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workout {
    pub id: String,
    pub source: Source,
    pub sport: Sport,
    /// The provider's own name of the activity.
    pub provider_type: String,
    #[serde(with = "crate::time::day")]
    pub day: Date,
    #[serde(with = "crate::time::instant")]
    pub start: OffsetDateTime,
    #[serde(with = "crate::time::instant")]
    pub end: OffsetDateTime,
    #[serde(with = "crate::time::offset", default)]
    pub utc_offset: Option<UtcOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_kcal: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_heart_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_heart_rate: Option<f64>,
}

impl Workout {
    pub fn new(
        id: impl Into<String>,
        source: Source,
        provider_type: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Self {
        Self {
            id: id.into(),
            source,
            sport: Sport::from_name(provider_type),
            provider_type: provider_type.to_owned(),
            day: start.date(),
            start,
            end,
            utc_offset: Some(start.offset()),
            distance_m: None,
            energy_kcal: None,
            avg_heart_rate: None,
            max_heart_rate: None,
        }
    }
}

/// Kinds of time-stamped samples (`GET /v1/users/{id}/samples?type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    HeartRate,
    Hrv,
}

impl SampleKind {
    pub const ALL: [SampleKind; 2] = [SampleKind::HeartRate, SampleKind::Hrv];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeartRate => "heart_rate",
            Self::Hrv => "hrv",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::HeartRate => "bpm",
            Self::Hrv => "ms",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown sample type `{raw}`; known: {}", known.join(", "))
        })
    }
}

/// One time-stamped value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(rename = "type")]
    pub kind: SampleKind,
    #[serde(with = "crate::time::instant")]
    pub time: OffsetDateTime,
    #[serde(with = "crate::time::offset", default)]
    pub utc_offset: Option<UtcOffset>,
    pub value: f64,
    pub source: Source,
}

/// Everything one fetch brought back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub daily: Vec<DailyRecord>,
    pub sleep: Vec<SleepSession>,
    pub workouts: Vec<Workout>,
    pub samples: Vec<Sample>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.daily.is_empty() && self.sleep.is_empty() && self.workouts.is_empty() && self.samples.is_empty()
    }

    pub fn extend(&mut self, other: Batch) {
        self.daily.extend(other.daily);
        self.sleep.extend(other.sleep);
        self.workouts.extend(other.workouts);
        self.samples.extend(other.samples);
    }

    /// The daily metrics and local dates this batch touches (the `data.updated` event's `metrics`, `dates`).
    pub fn touched(&self) -> (Vec<String>, Vec<Date>) {
        let mut metrics = std::collections::BTreeSet::new();
        let mut dates = std::collections::BTreeSet::new();
        for d in &self.daily {
            metrics.extend(d.metrics.keys().map(|m| m.as_str().to_owned()));
            dates.insert(d.day);
        }
        if !self.sleep.is_empty() {
            metrics.insert("sleep".to_owned());
        }
        if !self.workouts.is_empty() {
            metrics.insert("workouts".to_owned());
        }
        for s in &self.sleep {
            dates.insert(s.day);
        }
        for w in &self.workouts {
            dates.insert(w.day);
        }
        for s in &self.samples {
            metrics.insert(s.kind.as_str().to_owned());
            dates.insert(s.time.to_offset(s.utc_offset.unwrap_or(UtcOffset::UTC)).date());
        }
        (metrics.into_iter().collect(), dates.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_parse_back_and_unknown_ones_are_listed() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Ok(m));
            assert_eq!(serde_json::to_value(m).ok(), Some(serde_json::json!(m.as_str())));
        }
        assert!(Metric::parse("stepz").is_err_and(|e| e.contains("steps")));
    }

    #[test]
    fn a_missing_value_is_left_unset_rather_than_zero() {
        let mut d =
            DailyRecord::new(time::macros::date!(2026 - 03 - 04), Source::provider(crate::providers::ProviderId::Oura));
        d.set(Metric::Steps, Some(8234.0)).set(Metric::HrvMs, None).set(Metric::WeightKg, Some(f64::NAN));
        assert_eq!(d.metrics.len(), 1);
    }

    #[test]
    fn provider_activity_names_map_to_sports() {
        assert_eq!(Sport::from_name("Run"), Sport::Running);
        assert_eq!(Sport::from_name("road_biking"), Sport::Cycling);
        assert_eq!(Sport::from_name("VirtualRide"), Sport::Cycling);
        assert_eq!(Sport::from_name("WeightTraining"), Sport::Strength);
        assert_eq!(Sport::from_name("curling"), Sport::Other);
    }

    #[test]
    fn source_names_are_checked() {
        assert!(SourceName::parse("apple_health").is_ok());
        assert!(SourceName::parse("Apple Health").is_err());
        assert!(SourceName::parse("").is_err());
    }
}
