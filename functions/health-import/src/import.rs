//! The import driver: reads top-level elements, maps them to the normalized model, merges additive
//! quantities by source priority, and writes [`Batch`]es to a [`Sink`]; pauses on request with a
//! [`Checkpoint`] and resumes from one.
//!
//! Resuming: a checkpoint holds how many top-level elements were consumed and the open aggregation state
//! (the windows of the last day or two per lane, open sleep sessions, interned sources, counters). A fresh run
//! over the same input from its first byte passes over the consumed elements without reading their
//! attributes and carries on; it writes exactly the items an uninterrupted run would have written after that
//! point. Batch boundaries may differ; the items do not. Item ids are derived from the data (a hash of source,
//! start, end and type for sleep sessions and workouts), so re-importing the same export rewrites the same items.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::model::{Batch, DailyRecord, Metric, Sample, SampleKind, SleepSession, Source, SourceName, Workout};

use crate::error::ImportError;
use crate::merge::{DaySet, Piece, SourceOrder, Windows, merged_total};
use crate::parse::{Item, Kind, Parser, Record, Sources, Stage, Stamp, WorkoutRecord, day_to_date};
use crate::source::{self, Limits, Tap};

/// Where imported batches go (the function: DynamoDB). Batches come in stream order; each holds at most
/// [`Options::batch_items`] items, counting a daily record, sleep session or workout as one and the samples
/// of one type and hour as one (the store keeps those in one item, so they are never split across batches).
/// Writes must be idempotent upserts: after a failure the import resumes from its last checkpoint and writes
/// some items again.
pub trait Sink {
    fn write(&mut self, batch: Batch) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// How an import maps and merges.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Which sources win where they overlap (the tenant's order of device kinds or source names).
    pub order: SourceOrder,
    /// Most items per batch (DynamoDB's BatchWriteItem takes 25).
    pub batch_items: usize,
    pub limits: Limits,
    /// Days a lane's windows stay open behind its newest sample, absorbing that much disorder.
    pub reorder_days: i64,
    /// Hours a sample type's hour stays open behind its newest sample (samples are stored per hour).
    pub reorder_hours: i64,
    /// A gap longer than this ends a sleep session.
    pub sleep_gap_min: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            order: SourceOrder::default(),
            batch_items: 25,
            limits: Limits::default(),
            reorder_days: 1,
            reorder_hours: 2,
            sleep_gap_min: 120,
        }
    }
}

/// What an import did, for the import's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Top-level elements read (Records, Workouts, Correlations, ActivitySummaries, others).
    pub records_seen: u64,
    /// Records, workouts and activity summaries that contributed to the imported data.
    pub records_imported: u64,
    pub days_affected: u64,
    pub daily_records: u64,
    pub samples: u64,
    pub sleep_sessions: u64,
    pub workouts: u64,
    pub correlations: u64,
    pub activity_summaries: u64,
    /// Records of unmapped types and other elements, passed over.
    pub unmapped: u64,
    /// `InstantaneousBeatsPerMinute` entries of HRV records (read, not stored).
    pub beat_entries: u64,
    /// Samples that came after their day (or hour) had been closed: not counted (see `merge`).
    pub out_of_order: u64,
}

/// What `should_pause` is shown after each element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the upload read in this run (compressed bytes for a zip).
    pub bytes_read: u64,
    pub records_seen: u64,
    pub records_imported: u64,
    pub days_affected: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Stats),
    /// Boxed: a checkpoint is much larger than the stats.
    Paused(Box<Checkpoint>),
}

const CHECKPOINT_VERSION: u32 = 1;

/// Where a paused import stands. Serializes with serde; as JSON it is a few KB to a few tens of KB: the open
/// windows hold one or two days of the additive samples being merged (steps come every few minutes) and the
/// last two or three hours of heart rate, plus one number per day whose total energy still lacks a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    version: u32,
    /// The options it was made with: a resume with other options would not match an uninterrupted run.
    options: String,
    consumed: u64,
    state: State,
}

impl Checkpoint {
    /// Top-level elements consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DayWindow {
    offset: i32,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Level {
    offset: i32,
    sum: f64,
    n: u32,
    last: Option<(i64, f64)>,
}

/// Samples of one type and hour: (unix seconds, offset, value, source id).
type Hour = Vec<(i64, i32, f64, u32)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Lane {
    Steps,
    DistanceM,
    ActiveKcal,
    BasalKcal,
    SleepAsleep,
    SleepDeep,
    SleepRem,
    SleepCore,
    SleepAwake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum LevelLane {
    RestingHeartRate,
    HrvMs,
    Spo2Pct,
    WeightKg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenSleep {
    start: Stamp,
    end: Stamp,
    /// Minutes per stage, in `Stage` order.
    minutes: [f64; 6],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    stats: Stats,
    sources: Sources,
    additive: Windows<Lane, DayWindow>,
    levels: Windows<LevelLane, Level>,
    hours: Windows<SampleKind, Hour>,
    sleep: BTreeMap<u32, OpenSleep>,
    /// Active and basal energy of days where only one is known yet (their sum is the day's total).
    energy: BTreeMap<i32, (Option<f64>, Option<f64>)>,
    active_days: DaySet,
    days: DaySet,
}

/// Imports Apple Health exports; one per set of options, reusable across runs.
#[derive(Debug, Clone, Default)]
pub struct Importer {
    options: Options,
}

impl Importer {
    pub fn new(options: Options) -> Self {
        Self { options }
    }

    fn fingerprint(&self) -> String {
        let o = &self.options;
        format!("{:?}|{}|{}|{}", o.order.0, o.reorder_days, o.reorder_hours, o.sleep_gap_min)
    }

    /// Imports `input` (export.zip or export.xml, read from its first byte) into `sink`. With a checkpoint,
    /// passes over what the paused run consumed and continues from its state. After each element it asks
    /// `should_pause` (e.g. "is the Lambda deadline near?"); on `true` it writes what is complete and returns
    /// [`Outcome::Paused`] without reading further. A run always consumes at least one element first.
    pub fn run<R: Read, S: Sink + ?Sized>(
        &self,
        input: R,
        sink: &mut S,
        checkpoint: Option<Checkpoint>,
        mut should_pause: impl FnMut(&Progress) -> bool,
    ) -> Result<Outcome, ImportError> {
        let (mut state, consumed) = match checkpoint {
            None => (State::default(), 0),
            Some(c) if c.version != CHECKPOINT_VERSION => {
                return Err(ImportError::Checkpoint(format!("version {} is not {CHECKPOINT_VERSION}", c.version)));
            }
            Some(c) if c.options != self.fingerprint() => {
                return Err(ImportError::Checkpoint("it was made with other source priority or options".into()));
            }
            Some(c) => (c.state, c.consumed),
        };
        let tap = Tap::default();
        let read = tap.read.clone();
        source::with_export_xml(input, self.options.limits, tap, |filter| {
            let mut parser = Parser::new(filter, std::mem::take(&mut state.sources));
            let mut run = Run {
                options: &self.options,
                state,
                ranks: Vec::new(),
                names: Vec::new(),
                devices: Vec::new(),
                out: Batcher { batch: Batch::default(), items: 0, max: self.options.batch_items.max(1) },
                sink,
                source: SourceName::apple_health(),
            };
            let mut index = 0u64;
            loop {
                let skip = index < consumed;
                let Some(item) = parser.next(skip)? else { break };
                index += 1;
                if skip {
                    continue;
                }
                run.handle(item, &parser.sources)?;
                run.state.stats.records_seen = index;
                let s = &run.state.stats;
                let progress = Progress {
                    bytes_read: read.get(),
                    records_seen: s.records_seen,
                    records_imported: s.records_imported,
                    days_affected: run.state.days.len(),
                };
                if should_pause(&progress) {
                    run.flush()?;
                    let mut state = run.state;
                    state.sources = parser.sources;
                    return Ok(Outcome::Paused(Box::new(Checkpoint {
                        version: CHECKPOINT_VERSION,
                        options: self.fingerprint(),
                        consumed: index,
                        state,
                    })));
                }
            }
            if index < consumed {
                return Err(ImportError::Checkpoint(format!(
                    "it is past the end of this export ({consumed} elements consumed, the export has {index})"
                )));
            }
            run.finish(&parser.sources)?;
            Ok(Outcome::Completed(run.state.stats))
        })
    }
}

struct Batcher {
    batch: Batch,
    items: usize,
    max: usize,
}

struct Run<'o, 's, S: Sink + ?Sized> {
    options: &'o Options,
    state: State,
    ranks: Vec<u32>,
    names: Vec<String>,
    devices: Vec<Option<Arc<str>>>,
    out: Batcher,
    sink: &'s mut S,
    source: SourceName,
}

/// A short stable id from what identifies an item.
fn item_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn device_of(sources: &Sources, id: u32) -> Option<Arc<str>> {
    sources.get(id).map(|s| s.device_name.as_deref().unwrap_or(&s.name).into())
}

impl<S: Sink + ?Sized> Run<'_, '_, S> {
    fn handle(&mut self, item: Item, sources: &Sources) -> Result<(), ImportError> {
        self.refresh(sources);
        match item {
            Item::Record(r) => {
                self.state.stats.records_imported += 1;
                self.state.stats.beat_entries += u64::from(r.beats);
                self.record(r)?;
            }
            Item::Workout(w) => self.workout(*w, sources)?,
            Item::ActivitySummary { day, active_kcal } => {
                self.state.stats.activity_summaries += 1;
                // Apple's ring value fills days without active energy samples only.
                if let Some(kcal) = active_kcal.filter(|_| !self.state.active_days.contains(day)) {
                    self.state.stats.records_imported += 1;
                    self.daily(day, 0, &[(Metric::ActiveEnergyKcal, kcal)])?;
                }
            }
            Item::Correlation => self.state.stats.correlations += 1,
            Item::Other | Item::Skipped => self.state.stats.unmapped += 1,
        }
        Ok(())
    }

    fn record(&mut self, r: Record) -> Result<(), ImportError> {
        let lag = self.options.reorder_days;
        let day = i64::from(r.start.day);
        let lane = match r.kind {
            Kind::Steps => Some(Lane::Steps),
            Kind::DistanceM => Some(Lane::DistanceM),
            Kind::ActiveKcal => Some(Lane::ActiveKcal),
            Kind::BasalKcal => Some(Lane::BasalKcal),
            _ => None,
        };
        if let Some(lane) = lane {
            self.piece(lane, day, r.start.offset, Piece(r.start.unix, r.end.unix, r.value, r.source));
            return self.close_additive(lane, lag);
        }
        match r.kind {
            Kind::Sleep => self.sleep(&r)?,
            Kind::HeartRate => self.point(SampleKind::HeartRate, &r)?,
            Kind::HrvMs => {
                self.point(SampleKind::Hrv, &r)?;
                self.level(LevelLane::HrvMs, &r)?;
            }
            Kind::RestingHeartRate => self.level(LevelLane::RestingHeartRate, &r)?,
            Kind::Spo2Pct => self.level(LevelLane::Spo2Pct, &r)?,
            Kind::WeightKg => self.level(LevelLane::WeightKg, &r)?,
            _ => {}
        }
        Ok(())
    }

    fn piece(&mut self, lane: Lane, day: i64, offset: i32, p: Piece) {
        match self.state.additive.at(lane, day) {
            Some(w) => {
                if w.pieces.is_empty() {
                    w.offset = offset;
                }
                w.pieces.push(p);
            }
            None => self.state.stats.out_of_order += 1,
        }
    }

    fn close_additive(&mut self, lane: Lane, lag: i64) -> Result<(), ImportError> {
        for (day, w) in self.state.additive.ready(lane, lag) {
            self.emit_additive(lane, day as i32, w)?;
        }
        Ok(())
    }

    fn emit_additive(&mut self, lane: Lane, day: i32, w: DayWindow) -> Result<(), ImportError> {
        let total = merged_total(&w.pieces, &self.ranks);
        let metric = match lane {
            Lane::Steps => Metric::Steps,
            Lane::DistanceM => Metric::DistanceM,
            Lane::ActiveKcal | Lane::BasalKcal => return self.energy(lane, day, w.offset, total),
            Lane::SleepAsleep => Metric::SleepTotalMin,
            Lane::SleepDeep => Metric::SleepDeepMin,
            Lane::SleepRem => Metric::SleepRemMin,
            Lane::SleepCore => Metric::SleepLightMin,
            Lane::SleepAwake => Metric::SleepAwakeMin,
        };
        self.daily(day, w.offset, &[(metric, total)])
    }

    /// Active energy is a metric of its own; with basal energy it makes the day's total.
    fn energy(&mut self, lane: Lane, day: i32, offset: i32, kcal: f64) -> Result<(), ImportError> {
        let entry = self.state.energy.entry(day).or_default();
        if lane == Lane::ActiveKcal {
            entry.0 = Some(kcal);
        } else {
            entry.1 = Some(kcal);
        }
        let mut metrics = Vec::new();
        if lane == Lane::ActiveKcal {
            self.state.active_days.insert(day);
            metrics.push((Metric::ActiveEnergyKcal, kcal));
        }
        if let (Some(a), Some(b)) = *entry {
            self.state.energy.remove(&day);
            metrics.push((Metric::TotalEnergyKcal, a + b));
        }
        if metrics.is_empty() { Ok(()) } else { self.daily(day, offset, &metrics) }
    }

    fn level(&mut self, lane: LevelLane, r: &Record) -> Result<(), ImportError> {
        match self.state.levels.at(lane, i64::from(r.start.day)) {
            Some(l) => {
                if l.n == 0 {
                    l.offset = r.start.offset;
                }
                l.sum += r.value;
                l.n += 1;
                if l.last.is_none_or(|(t, _)| r.start.unix >= t) {
                    l.last = Some((r.start.unix, r.value));
                }
            }
            None => self.state.stats.out_of_order += 1,
        }
        for (day, l) in self.state.levels.ready(lane, self.options.reorder_days) {
            self.emit_level(lane, day as i32, l)?;
        }
        Ok(())
    }

    fn emit_level(&mut self, lane: LevelLane, day: i32, l: Level) -> Result<(), ImportError> {
        if l.n == 0 {
            return Ok(());
        }
        let avg = l.sum / f64::from(l.n);
        let (metric, value) = match lane {
            LevelLane::RestingHeartRate => (Metric::RestingHeartRate, avg),
            LevelLane::HrvMs => (Metric::HrvMs, avg),
            LevelLane::Spo2Pct => (Metric::Spo2Pct, avg),
            LevelLane::WeightKg => (Metric::WeightKg, l.last.map_or(avg, |(_, v)| v)),
        };
        self.daily(day, l.offset, &[(metric, value)])
    }

    fn point(&mut self, kind: SampleKind, r: &Record) -> Result<(), ImportError> {
        let hour = r.start.unix.div_euclid(3600);
        match self.state.hours.at(kind, hour) {
            Some(h) => h.push((r.start.unix, r.start.offset, r.value, r.source)),
            None => self.state.stats.out_of_order += 1,
        }
        for (_, h) in self.state.hours.ready(kind, self.options.reorder_hours) {
            self.emit_hour(kind, h)?;
        }
        Ok(())
    }

    fn emit_hour(&mut self, kind: SampleKind, h: Hour) -> Result<(), ImportError> {
        if h.is_empty() {
            return Ok(());
        }
        let mut last_day = None;
        self.state.stats.samples += h.len() as u64;
        self.out.batch.samples.reserve(h.len());
        for (t, offset, value, src) in h {
            let stamp = Stamp { unix: t, offset, day: 0 };
            let day = (t + i64::from(offset)).div_euclid(86_400) as i32;
            if last_day != Some(day) {
                self.state.days.insert(day);
                last_day = Some(day);
            }
            self.out.batch.samples.push(Sample {
                kind,
                time: stamp.instant(),
                utc_offset: Some(stamp.offset()),
                value,
                source: Source { name: self.source.clone(), device: self.devices.get(src as usize).cloned().flatten() },
            });
        }
        self.push_item()
    }

    /// Sleep stages feed the daily sleep minutes (merged by source priority, by the night's day: a stage
    /// starting from 18:00 counts for the next day) and each source's sleep sessions.
    fn sleep(&mut self, r: &Record) -> Result<(), ImportError> {
        let Some(stage) = r.stage else { return Ok(()) };
        let minutes = (r.end.unix - r.start.unix).max(0) as f64 / 60.0;
        let night = (r.start.unix + i64::from(r.start.offset) + 6 * 3600).div_euclid(86_400);
        let lanes: &[Lane] = match stage {
            Stage::InBed => &[],
            Stage::AsleepUnspecified => &[Lane::SleepAsleep],
            Stage::Core => &[Lane::SleepAsleep, Lane::SleepCore],
            Stage::Deep => &[Lane::SleepAsleep, Lane::SleepDeep],
            Stage::Rem => &[Lane::SleepAsleep, Lane::SleepRem],
            Stage::Awake => &[Lane::SleepAwake],
        };
        for &lane in lanes {
            self.piece(lane, night, r.start.offset, Piece(r.start.unix, r.end.unix, minutes, r.source));
            self.close_additive(lane, self.options.reorder_days)?;
        }
        let gap = self.options.sleep_gap_min * 60;
        let continues = self.state.sleep.get(&r.source).is_some_and(|s| r.start.unix <= s.end.unix + gap);
        if !continues && let Some(done) = self.state.sleep.remove(&r.source) {
            self.emit_sleep(r.source, done)?;
        }
        let open =
            self.state.sleep.entry(r.source).or_insert(OpenSleep { start: r.start, end: r.end, minutes: [0.0; 6] });
        if r.end.unix > open.end.unix {
            open.end = r.end;
        }
        open.minutes[stage as usize] += minutes;
        Ok(())
    }

    fn emit_sleep(&mut self, src: u32, s: OpenSleep) -> Result<(), ImportError> {
        let m = |st: Stage| s.minutes[st as usize];
        let asleep: f64 = [Stage::AsleepUnspecified, Stage::Core, Stage::Deep, Stage::Rem].into_iter().map(m).sum();
        let name = self.names.get(src as usize).cloned().unwrap_or_default();
        let id = item_id(&["sleep", &name, &s.start.unix.to_string(), &s.end.unix.to_string()]);
        let source = Source { name: self.source.clone(), device: self.devices.get(src as usize).cloned().flatten() };
        let mut session = SleepSession::new(id, source, s.end.date(), s.start.instant(), s.end.instant());
        let nonzero = |v: f64| (v > 0.0).then_some(v);
        session.total_sleep_min = nonzero(asleep);
        session.deep_min = nonzero(m(Stage::Deep));
        session.rem_min = nonzero(m(Stage::Rem));
        session.light_min = nonzero(m(Stage::Core));
        session.awake_min = nonzero(m(Stage::Awake));
        let span = (s.end.unix - s.start.unix) as f64 / 60.0;
        session.efficiency_pct = (asleep > 0.0 && span > 0.0).then(|| (asleep / span * 100.0).min(100.0));
        self.state.days.insert(s.end.day);
        self.state.stats.sleep_sessions += 1;
        self.out.batch.sleep.push(session);
        self.push_item()
    }

    fn workout(&mut self, w: WorkoutRecord, sources: &Sources) -> Result<(), ImportError> {
        let (Some(start), Some(end)) = (w.start, w.end) else {
            self.state.stats.unmapped += 1;
            return Ok(());
        };
        let name = sources.get(w.source).map(|s| s.name.clone()).unwrap_or_default();
        let id = item_id(&["workout", &name, &w.activity, &start.unix.to_string(), &end.unix.to_string()]);
        let source = Source { name: self.source.clone(), device: device_of(sources, w.source) };
        let mut out = Workout::new(id, source, &w.activity, start.instant(), end.instant());
        out.distance_m = w.distance_m;
        out.energy_kcal = w.energy_kcal;
        out.avg_heart_rate = w.avg_heart_rate;
        out.max_heart_rate = w.max_heart_rate;
        self.state.days.insert(start.day);
        self.state.stats.workouts += 1;
        self.state.stats.records_imported += 1;
        self.out.batch.workouts.push(out);
        self.push_item()
    }

    fn daily(&mut self, day: i32, offset: i32, metrics: &[(Metric, f64)]) -> Result<(), ImportError> {
        let mut d = DailyRecord::new(day_to_date(day), Source { name: self.source.clone(), device: None });
        d.utc_offset = time::UtcOffset::from_whole_seconds(offset).ok();
        for &(m, v) in metrics {
            d.set(m, Some(v));
        }
        if d.metrics.is_empty() {
            return Ok(());
        }
        self.state.days.insert(day);
        self.state.stats.daily_records += 1;
        self.out.batch.daily.push(d);
        self.push_item()
    }

    fn push_item(&mut self) -> Result<(), ImportError> {
        self.out.items += 1;
        if self.out.items >= self.out.max { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), ImportError> {
        self.state.stats.days_affected = self.state.days.len();
        if self.out.items == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.out.batch);
        self.out.items = 0;
        self.sink.write(batch).map_err(ImportError::Sink)
    }

    /// At the end of the export: closes every open window and session, in a fixed order.
    fn finish(&mut self, sources: &Sources) -> Result<(), ImportError> {
        self.refresh(sources);
        for (lane, day, w) in self.state.additive.drain() {
            self.emit_additive(lane, day as i32, w)?;
        }
        for (lane, day, l) in self.state.levels.drain() {
            self.emit_level(lane, day as i32, l)?;
        }
        for (kind, _, h) in self.state.hours.drain() {
            self.emit_hour(kind, h)?;
        }
        for (src, s) in std::mem::take(&mut self.state.sleep) {
            self.emit_sleep(src, s)?;
        }
        self.flush()
    }

    /// Source ranks, names and device names by source id, after new sources appeared.
    fn refresh(&mut self, sources: &Sources) {
        if self.ranks.len() != sources.list.len() {
            self.ranks = self.options.order.ranks(&sources.list);
            self.names = sources.list.iter().map(|s| s.name.clone()).collect();
            self.devices = (0..sources.list.len() as u32).map(|i| device_of(sources, i)).collect();
        }
    }
}
