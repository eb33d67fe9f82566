//! JSON push ingest (`POST /v1/users/{id}/ingest/apple-health`, `/v1/me/...`): Health Auto Export style
//! payloads from a Shortcuts-style automation, mapped into the normalized model with source `apple_health`.
//!
//! A push is authoritative for the local days it covers: each day's value of a metric is computed from the
//! push's points of that day and replaces what was stored, so pushing the same payload twice changes nothing,
//! and the app's usual periods (Default: yesterday and today so far; Today; Yesterday; Previous 7 Days) keep
//! every day whole. Where one day has points from several devices (an iPhone and a Watch both count steps),
//! one device is chosen per metric, the Watch first, never a sum.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::model::{Batch, DailyRecord, Metric, Sample, SampleKind, SleepSession, Source, SourceName, Workout};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// What a push brought, for the answer.
#[derive(Debug, Default, serde::Serialize, PartialEq)]
pub struct Summary {
    pub days: Vec<String>,
    /// The days whose stored daily values or sessions this push changed (none, for the same push again).
    pub changed_days: Vec<String>,
    pub records: usize,
    /// Metric names this endpoint does not map (kept nowhere), so the sender can see them.
    pub ignored_metrics: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct IngestError(pub String);

fn bad(msg: impl Into<String>) -> IngestError {
    IngestError(msg.into())
}

/// `2026-03-04 07:15:00 +0100` (the app's format) or RFC 3339.
fn instant(raw: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(raw, fmt).ok().or_else(|| shared::time::parse(raw))
}

/// How a metric's points of one day become the day's value.
#[derive(Clone, Copy)]
enum Fold {
    Sum,
    Mean,
    Last,
}

/// The app's metric names we map. Basal energy lands in total energy, to which active energy is added.
fn metric_of(name: &str) -> Option<Metric> {
    Some(match name {
        "step_count" => Metric::Steps,
        "walking_running_distance" => Metric::DistanceM,
        "active_energy" => Metric::ActiveEnergyKcal,
        "basal_energy_burned" => Metric::TotalEnergyKcal,
        "resting_heart_rate" => Metric::RestingHeartRate,
        "heart_rate_variability" => Metric::HrvMs,
        "blood_oxygen_saturation" => Metric::Spo2Pct,
        "weight_body_mass" => Metric::WeightKg,
        _ => return None,
    })
}

fn fold_of(metric: Metric) -> Fold {
    match metric {
        Metric::RestingHeartRate | Metric::HrvMs | Metric::Spo2Pct => Fold::Mean,
        Metric::WeightKg => Fold::Last,
        _ => Fold::Sum,
    }
}

/// Converts a value in `units` to the model's unit for `metric`; `None` for a unit we do not know.
fn convert(metric: Metric, units: &str, v: f64) -> Option<f64> {
    let u = units.to_ascii_lowercase();
    Some(match (metric, u.as_str()) {
        (Metric::DistanceM, "km") => v * 1000.0,
        (Metric::DistanceM, "mi") => v * 1609.344,
        (Metric::DistanceM, "m") => v,
        (Metric::ActiveEnergyKcal | Metric::TotalEnergyKcal, "kcal" | "cal") => v,
        (Metric::ActiveEnergyKcal | Metric::TotalEnergyKcal, "kj") => v / 4.184,
        (Metric::WeightKg, "kg") => v,
        (Metric::WeightKg, "lb" | "lbs") => v * 0.453_592_37,
        // A fraction (0.96) or a percentage (96).
        (Metric::Spo2Pct, _) => {
            if v <= 1.0 {
                v * 100.0
            } else {
                v
            }
        }
        (Metric::Steps | Metric::RestingHeartRate | Metric::HrvMs, _) => v,
        _ => return None,
    })
}

/// Devices in Apple Health's default order: the Watch before the phone, anything else after.
fn device_rank(device: &str) -> (u8, &str) {
    let d = device.to_ascii_lowercase();
    let rank = if d.contains('|') {
        0 // already merged by HealthKit's statistics
    } else if d.contains("watch") {
        1
    } else if d.contains("iphone") {
        2
    } else {
        3
    };
    (rank, device)
}

fn source(device: Option<&str>) -> Source {
    Source { name: SourceName::apple_health(), device: device.map(Into::into) }
}

/// A stable id from what identifies a session, so a re-push rewrites the same item.
fn stable_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("|").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.get("qty").and_then(Value::as_f64))
}

/// One day's points of one metric by device: the values, and the offset they were recorded at.
type DevicePoints = HashMap<String, (Vec<f64>, time::UtcOffset)>;

/// Maps a payload to a batch. Unknown metrics are reported, malformed points refused with where they are.
pub fn parse(body: &Value) -> Result<(Batch, Summary), IngestError> {
    let data = body.get("data").filter(|d| d.is_object()).ok_or_else(|| {
        bad("the body must be {\"data\": {\"metrics\": [...], \"workouts\": [...]}} as Health Auto Export sends it")
    })?;
    let mut batch = Batch::default();
    let mut summary = Summary::default();
    // (day, metric) -> device -> (values, offset)
    let mut points: BTreeMap<(Date, Metric), DevicePoints> = BTreeMap::new();
    let empty = Vec::new();
    for (i, m) in data.get("metrics").and_then(Value::as_array).unwrap_or(&empty).iter().enumerate() {
        let name = m.get("name").and_then(Value::as_str).ok_or_else(|| bad(format!("metrics[{i}] has no name")))?;
        let units = m.get("units").and_then(Value::as_str).unwrap_or("");
        let items =
            m.get("data").and_then(Value::as_array).ok_or_else(|| bad(format!("metric {name} has no data array")))?;
        let at = |j: usize, what: &str| bad(format!("metric {name}, data[{j}]: {what}"));
        match name {
            "heart_rate" => {
                for (j, p) in items.iter().enumerate() {
                    let t = p
                        .get("date")
                        .and_then(Value::as_str)
                        .and_then(instant)
                        .ok_or_else(|| at(j, "date must look like 2026-03-04 07:15:00 +0100"))?;
                    let value =
                        p.get("Avg").and_then(Value::as_f64).or_else(|| num(p)).ok_or_else(|| at(j, "needs Avg"))?;
                    let device = p.get("source").and_then(Value::as_str);
                    batch.samples.push(Sample {
                        kind: SampleKind::HeartRate,
                        time: t,
                        utc_offset: Some(t.offset()),
                        value,
                        source: source(device),
                    });
                }
            }
            "sleep_analysis" => {
                for (j, p) in items.iter().enumerate() {
                    let start =
                        p.get("sleepStart").or_else(|| p.get("inBedStart")).and_then(Value::as_str).and_then(instant);
                    let end = p.get("sleepEnd").or_else(|| p.get("inBedEnd")).and_then(Value::as_str).and_then(instant);
                    let (Some(start), Some(end)) = (start, end) else {
                        return Err(at(j, "needs sleepStart and sleepEnd"));
                    };
                    if end <= start {
                        return Err(at(j, "sleepEnd must be after sleepStart"));
                    }
                    let device = p.get("source").or_else(|| p.get("sleepSource")).and_then(Value::as_str);
                    let hours = |k: &str| p.get(k).and_then(Value::as_f64).map(|h| h * 60.0);
                    let day = end.date();
                    let id = stable_id(&[
                        "sleep",
                        &shared::time::format(start),
                        &shared::time::format(end),
                        device.unwrap_or(""),
                    ]);
                    let mut s = SleepSession::new(id, source(device), day, start, end);
                    s.total_sleep_min = hours("totalSleep").or_else(|| hours("asleep"));
                    s.deep_min = hours("deep");
                    s.rem_min = hours("rem");
                    s.light_min = hours("core");
                    s.awake_min = hours("awake");
                    let mut d = DailyRecord::new(day, source(None));
                    d.utc_offset = Some(end.offset());
                    d.set(Metric::SleepTotalMin, s.total_sleep_min)
                        .set(Metric::SleepDeepMin, s.deep_min)
                        .set(Metric::SleepRemMin, s.rem_min)
                        .set(Metric::SleepLightMin, s.light_min)
                        .set(Metric::SleepAwakeMin, s.awake_min);
                    batch.daily.push(d);
                    batch.sleep.push(s);
                }
            }
            _ => {
                let Some(metric) = metric_of(name) else {
                    summary.ignored_metrics.push(name.to_owned());
                    continue;
                };
                for (j, p) in items.iter().enumerate() {
                    let t = p
                        .get("date")
                        .and_then(Value::as_str)
                        .and_then(instant)
                        .ok_or_else(|| at(j, "date must look like 2026-03-04 07:15:00 +0100"))?;
                    let raw = num(p).ok_or_else(|| at(j, "needs a numeric qty"))?;
                    let v = convert(metric, units, raw)
                        .ok_or_else(|| bad(format!("metric {name}: unknown units `{units}`")))?;
                    let device = p.get("source").and_then(Value::as_str).unwrap_or("").to_owned();
                    let entry =
                        points.entry((t.date(), metric)).or_default().entry(device).or_insert((Vec::new(), t.offset()));
                    entry.0.push(v);
                }
            }
        }
    }
    let mut days: BTreeMap<Date, DailyRecord> = BTreeMap::new();
    for ((day, metric), by_device) in points {
        let fold = fold_of(metric);
        let Some((_, (values, offset))) = by_device.iter().min_by(|a, b| device_rank(a.0).cmp(&device_rank(b.0)))
        else {
            continue;
        };
        let value = match fold {
            Fold::Sum => values.iter().sum(),
            Fold::Mean => values.iter().sum::<f64>() / values.len() as f64,
            Fold::Last => values.last().copied().unwrap_or_default(),
        };
        let d = days.entry(day).or_insert_with(|| DailyRecord::new(day, source(None)));
        d.utc_offset = d.utc_offset.or(Some(*offset));
        d.set(metric, Some(value));
    }
    for d in days.values_mut() {
        if let (Some(active), Some(basal)) =
            (d.metrics.get(&Metric::ActiveEnergyKcal), d.metrics.get(&Metric::TotalEnergyKcal))
        {
            let total = active + basal;
            d.metrics.insert(Metric::TotalEnergyKcal, total);
        }
    }
    batch.daily.extend(days.into_values());
    for (i, w) in data.get("workouts").and_then(Value::as_array).unwrap_or(&empty).iter().enumerate() {
        let at = |what: &str| bad(format!("workouts[{i}]: {what}"));
        let name = w.get("name").and_then(Value::as_str).ok_or_else(|| at("needs a name"))?;
        let start = w
            .get("start")
            .and_then(Value::as_str)
            .and_then(instant)
            .ok_or_else(|| at("start must look like 2026-03-04 07:15:00 +0100"))?;
        let end = w
            .get("end")
            .and_then(Value::as_str)
            .and_then(instant)
            .ok_or_else(|| at("end must look like 2026-03-04 07:15:00 +0100"))?;
        if end < start {
            return Err(at("end must not be before start"));
        }
        let id =
            w.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
                stable_id(&["workout", name, &shared::time::format(start), &shared::time::format(end)])
            });
        let mut out = Workout::new(id, source(None), name, start, end);
        let quantity = |keys: &[&str]| {
            keys.iter().find_map(|k| w.get(*k)).map(|q| (num(q), q.get("units").and_then(Value::as_str).unwrap_or("")))
        };
        if let Some((Some(v), units)) = quantity(&["distance"]) {
            out.distance_m = convert(Metric::DistanceM, units, v);
        }
        if let Some((Some(v), units)) = quantity(&["activeEnergyBurned", "activeEnergy"]) {
            out.energy_kcal = convert(Metric::ActiveEnergyKcal, if units.is_empty() { "kcal" } else { units }, v);
        }
        out.avg_heart_rate = quantity(&["avgHeartRate", "heartRate"]).and_then(|(v, _)| v);
        out.max_heart_rate = quantity(&["maxHeartRate"]).and_then(|(v, _)| v);
        batch.workouts.push(out);
    }
    let (_, dates) = batch.touched();
    summary.days = dates.into_iter().map(shared::time::format_day).collect();
    summary.records = batch.daily.len() + batch.sleep.len() + batch.workouts.len() + batch.samples.len();
    Ok((batch, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload() -> Value {
        json!({"data": {
            "metrics": [
                {"name": "step_count", "units": "count", "data": [
                    {"date": "2026-03-04 08:00:00 +0100", "qty": 1200, "source": "iPhone"},
                    {"date": "2026-03-04 09:00:00 +0100", "qty": 800, "source": "iPhone"},
                    {"date": "2026-03-04 08:00:00 +0100", "qty": 1500, "source": "Apple Watch"},
                    {"date": "2026-03-04 09:00:00 +0100", "qty": 900, "source": "Apple Watch"},
                    {"date": "2026-03-05 08:00:00 +0100", "qty": 300, "source": "iPhone"}
                ]},
                {"name": "walking_running_distance", "units": "km", "data": [{"date": "2026-03-04 08:00:00 +0100", "qty": 1.5}]},
                {"name": "blood_oxygen_saturation", "units": "%", "data": [
                    {"date": "2026-03-04 03:00:00 +0100", "qty": 0.96}, {"date": "2026-03-04 04:00:00 +0100", "qty": 98}
                ]},
                {"name": "active_energy", "units": "kJ", "data": [{"date": "2026-03-04 08:00:00 +0100", "qty": 418.4}]},
                {"name": "basal_energy_burned", "units": "kcal", "data": [{"date": "2026-03-04 08:00:00 +0100", "qty": 1500}]},
                {"name": "heart_rate", "units": "count/min", "data": [{"date": "2026-03-04 08:00:00 +0100", "Min": 60, "Avg": 72, "Max": 90}]},
                {"name": "sleep_analysis", "units": "hr", "data": [{"date": "2026-03-04", "totalSleep": 7.5, "core": 4, "deep": 1.5,
                  "rem": 2, "awake": 0.25, "sleepStart": "2026-03-03 23:10:00 +0100", "sleepEnd": "2026-03-04 06:55:00 +0100", "source": "Apple Watch"}]},
                {"name": "mindful_minutes", "units": "min", "data": [{"date": "2026-03-04 08:00:00 +0100", "qty": 10}]}
            ],
            "workouts": [{"name": "Outdoor Run", "start": "2026-03-04 18:00:00 +0100", "end": "2026-03-04 18:40:00 +0100",
                          "distance": {"qty": 6.2, "units": "km"}, "activeEnergyBurned": {"qty": 420, "units": "kcal"}}]
        }})
    }

    fn day(batch: &Batch, d: &str) -> BTreeMap<Metric, f64> {
        batch
            .daily
            .iter()
            .filter(|r| shared::time::format_day(r.day) == d)
            .flat_map(|r| r.metrics.iter().map(|(m, v)| (*m, *v)))
            .collect()
    }

    #[test]
    fn a_day_counted_by_the_phone_and_the_watch_takes_the_watch_never_the_sum() {
        let (batch, summary) = parse(&payload()).unwrap_or_else(|e| panic!("{e}"));
        let d = day(&batch, "2026-03-04");
        assert_eq!(d[&Metric::Steps], 2400.0, "the Watch's 1,500 + 900, not 4,400");
        assert_eq!(day(&batch, "2026-03-05")[&Metric::Steps], 300.0, "only the phone that day");
        assert_eq!(d[&Metric::DistanceM], 1500.0);
        assert_eq!(d[&Metric::Spo2Pct], 97.0, "0.96 is 96 %; the mean with 98");
        assert!((d[&Metric::ActiveEnergyKcal] - 100.0).abs() < 1e-9, "418.4 kJ");
        assert!((d[&Metric::TotalEnergyKcal] - 1600.0).abs() < 1e-9, "active + basal");
        assert_eq!(d[&Metric::SleepTotalMin], 450.0);
        assert_eq!(d[&Metric::SleepDeepMin], 90.0);
        assert_eq!(summary.ignored_metrics, vec!["mindful_minutes".to_owned()]);
        assert_eq!(summary.days, vec!["2026-03-04".to_owned(), "2026-03-05".to_owned()]);
        let w = &batch.workouts[0];
        assert_eq!((w.sport, w.distance_m, w.energy_kcal), (shared::model::Sport::Running, Some(6200.0), Some(420.0)));
        assert_eq!(w.utc_offset, Some(time::macros::offset!(+1)));
        assert_eq!(batch.samples[0].value, 72.0);
        assert_eq!(shared::time::format_day(batch.sleep[0].day), "2026-03-04", "the day the user woke up");
    }

    #[test]
    fn the_same_payload_gives_the_same_ids() {
        let (a, _) = parse(&payload()).unwrap_or_else(|e| panic!("{e}"));
        let (b, _) = parse(&payload()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_pushes_say_where_the_problem_is() {
        let cases = [
            (json!({"metrics": []}), "data"),
            (json!({"data": {"metrics": [{"units": "count", "data": []}]}}), "metrics[0] has no name"),
            (
                json!({"data": {"metrics": [{"name": "step_count", "data": [{"date": "yesterday", "qty": 1}]}]}}),
                "step_count, data[0]",
            ),
            (
                json!({"data": {"metrics": [{"name": "step_count", "data": [{"date": "2026-03-04 08:00:00 +0100"}]}]}}),
                "numeric qty",
            ),
            (
                json!({"data": {"metrics": [{"name": "walking_running_distance", "units": "furlong", "data": [{"date": "2026-03-04 08:00:00 +0100", "qty": 1}]}]}}),
                "furlong",
            ),
            (
                json!({"data": {"workouts": [{"name": "Run", "start": "2026-03-04 18:00:00 +0100", "end": "2026-03-04 17:00:00 +0100"}]}}),
                "workouts[0]",
            ),
        ];
        for (body, needle) in cases {
            let err = parse(&body).err().map(|e| e.0).unwrap_or_default();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }
}
