//! The export XML as a stream of top-level elements (`Record`, `Workout`, `Correlation`, `ActivitySummary`,
//! anything else), parsed with quick-xml from a reused buffer: memory stays constant whatever the file size.
//!
//! Attributes are read by a small scanner instead of quick-xml's strict one: 2015 exports have spaces inside
//! attribute names (`source Name="..."`), which it reads as the name without the spaces. Values are converted
//! to the model's units here (km/mi to m, kJ to kcal, lb to kg, SpO2 fraction to percent), so the rest of the
//! importer sees numbers only.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

use crate::error::{ImportError, ZipBombTripped, from_io};
use crate::source::XmlFilter;

/// A moment as the export writes it (`2019-05-14 19:05:29 -0400`): the instant and the local calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Seconds since the Unix epoch.
    pub unix: i64,
    /// The UTC offset it was recorded at, in seconds.
    pub offset: i32,
    /// The local calendar day, in days since 1970-01-01.
    pub day: i32,
}

impl Stamp {
    /// Parses `YYYY-MM-DD HH:MM:SS ±HHMM` (a missing offset reads as UTC).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let raw = trim(raw);
        if raw.len() < 19 || raw[4] != b'-' || raw[7] != b'-' || raw[13] != b':' || raw[16] != b':' {
            return None;
        }
        let n = |r: std::ops::Range<usize>| -> Option<i64> {
            raw.get(r)?.iter().try_fold(0i64, |acc, c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
        };
        let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
        let (h, mi, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let offset = match trim(&raw[19..]) {
            [] => 0,
            [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 4 => {
                let hh =
                    rest[..2].iter().try_fold(0i64, |a, c| c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0')))?;
                let mm =
                    rest[2..].iter().try_fold(0i64, |a, c| c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0')))?;
                let secs = hh * 3600 + mm * 60;
                if *sign == b'-' { -secs } else { secs }
            }
            _ => return None,
        };
        let day = days_from_civil(y, mo, d);
        let local = day * 86_400 + h * 3600 + mi * 60 + s;
        Some(Self { unix: local - offset, offset: offset as i32, day: day as i32 })
    }

    pub fn date(self) -> time::Date {
        day_to_date(self.day)
    }

    pub fn offset(self) -> time::UtcOffset {
        time::UtcOffset::from_whole_seconds(self.offset).unwrap_or(time::UtcOffset::UTC)
    }

    pub fn instant(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(self.unix)
            .map(|t| t.to_offset(self.offset()))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn day_to_date(day: i32) -> time::Date {
    time::Date::from_julian_day(day + 2_440_588).unwrap_or(time::Date::MIN)
}

pub fn date_to_day(d: time::Date) -> i32 {
    d.to_julian_day() - 2_440_588
}

/// The record types the importer maps; everything else is counted and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Steps,
    DistanceM,
    ActiveKcal,
    BasalKcal,
    HeartRate,
    RestingHeartRate,
    HrvMs,
    Spo2Pct,
    WeightKg,
    Sleep,
}

impl Kind {
    fn from_type(t: &[u8]) -> Option<Self> {
        Some(match t {
            b"HKQuantityTypeIdentifierStepCount" => Self::Steps,
            b"HKQuantityTypeIdentifierDistanceWalkingRunning" => Self::DistanceM,
            b"HKQuantityTypeIdentifierActiveEnergyBurned" => Self::ActiveKcal,
            b"HKQuantityTypeIdentifierBasalEnergyBurned" => Self::BasalKcal,
            b"HKQuantityTypeIdentifierHeartRate" => Self::HeartRate,
            b"HKQuantityTypeIdentifierRestingHeartRate" => Self::RestingHeartRate,
            b"HKQuantityTypeIdentifierHeartRateVariabilitySDNN" => Self::HrvMs,
            b"HKQuantityTypeIdentifierOxygenSaturation" => Self::Spo2Pct,
            b"HKQuantityTypeIdentifierBodyMass" => Self::WeightKg,
            b"HKCategoryTypeIdentifierSleepAnalysis" => Self::Sleep,
            _ => return None,
        })
    }

    /// The value in the model's unit.
    fn convert(self, unit: &[u8], v: f64) -> f64 {
        match (self, unit) {
            (Self::DistanceM, b"km") => v * 1000.0,
            (Self::DistanceM, b"mi") => v * 1609.344,
            (Self::DistanceM, b"ft") => v * 0.3048,
            (Self::DistanceM, b"yd") => v * 0.9144,
            (Self::DistanceM, b"cm") => v / 100.0,
            (Self::ActiveKcal | Self::BasalKcal, b"kJ") => v / 4.184,
            (Self::WeightKg, b"lb") => v * 0.453_592_37,
            (Self::WeightKg, b"g") => v / 1000.0,
            (Self::WeightKg, b"st") => v * 6.350_293_18,
            // SpO2 says `%` but holds a fraction (0.96); a value above 1 already is a percentage.
            (Self::Spo2Pct, _) if v <= 1.0 => v * 100.0,
            _ => v,
        }
    }
}

/// Sleep analysis values (stages since iOS 16; `Asleep` before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    InBed,
    AsleepUnspecified,
    Awake,
    Core,
    Deep,
    Rem,
}

impl Stage {
    fn parse(v: &[u8]) -> Option<Self> {
        let v = v.strip_prefix(b"HKCategoryValueSleepAnalysis").unwrap_or(v);
        Some(match v {
            b"InBed" => Self::InBed,
            b"Asleep" | b"AsleepUnspecified" => Self::AsleepUnspecified,
            b"Awake" => Self::Awake,
            b"AsleepCore" => Self::Core,
            b"AsleepDeep" => Self::Deep,
            b"AsleepREM" => Self::Rem,
            _ => return None,
        })
    }

    pub fn is_asleep(self) -> bool {
        matches!(self, Self::AsleepUnspecified | Self::Core | Self::Deep | Self::Rem)
    }
}

/// A mapped `Record`: numbers only; its source is an index into [`Sources`].
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub source: u32,
    pub value: f64,
    pub stage: Option<Stage>,
    pub start: Stamp,
    pub end: Stamp,
    /// `HeartRateVariabilityMetadataList/InstantaneousBeatsPerMinute` entries (HRV records).
    pub beats: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkoutRecord {
    /// `workoutActivityType` without the `HKWorkoutActivityType` prefix (`Running`).
    pub activity: String,
    pub source: u32,
    pub start: Option<Stamp>,
    pub end: Option<Stamp>,
    pub duration_min: Option<f64>,
    pub distance_m: Option<f64>,
    pub energy_kcal: Option<f64>,
    pub avg_heart_rate: Option<f64>,
    pub max_heart_rate: Option<f64>,
    pub statistics: u32,
}

/// One top-level element of `HealthData`.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Record(Record),
    /// Boxed: workouts are rare and large; records are many and should move cheaply.
    Workout(Box<WorkoutRecord>),
    ActivitySummary {
        day: i32,
        active_kcal: Option<f64>,
    },
    /// A Correlation (blood pressure, food): its Records also appear at the top level, so it adds nothing.
    Correlation,
    /// A Record of a type the importer does not map, a malformed one, or another element (`Me`, `ExportDate`).
    Other,
    /// Passed over without reading (resuming past consumed elements).
    Skipped,
}

/// One source of samples: an app or device (`sourceName`), with the device's name and model when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    pub device_name: Option<String>,
    pub model: Option<String>,
    /// The raw attributes it was interned under.
    key: (String, String),
}

/// Sources seen so far, interned: records point at them by index. Part of a checkpoint, so that indexes
/// stay the same across a resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sources {
    pub list: Vec<SourceInfo>,
    #[serde(skip)]
    index: HashMap<(String, String), u32>,
    #[serde(skip)]
    last: Option<(Vec<u8>, Vec<u8>, u32)>,
}

impl Sources {
    fn intern(&mut self, name: &[u8], device: &[u8]) -> u32 {
        if let Some((n, d, id)) = &self.last
            && n == name
            && d == device
        {
            return *id;
        }
        // Exports hold a handful of sources, and records from two of them interleave: a scan over the list
        // finds one without allocating; the map serves exports with many apps.
        let known = (self.list.len() <= 16)
            .then(|| self.list.iter().position(|s| s.key.0.as_bytes() == name && s.key.1.as_bytes() == device))
            .flatten();
        let id = match known {
            Some(id) => id as u32,
            None => self.intern_slow(name, device),
        };
        match &mut self.last {
            Some((n, d, last)) => {
                n.clear();
                n.extend_from_slice(name);
                d.clear();
                d.extend_from_slice(device);
                *last = id;
            }
            None => self.last = Some((name.to_vec(), device.to_vec(), id)),
        }
        id
    }

    fn intern_slow(&mut self, name: &[u8], device: &[u8]) -> u32 {
        if self.index.len() != self.list.len() {
            self.index = self.list.iter().enumerate().map(|(i, s)| (s.key.clone(), i as u32)).collect();
        }
        let key = (String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(device).into_owned());
        match self.index.get(&key) {
            Some(id) => *id,
            None => {
                let id = self.list.len() as u32;
                let device_text = text(device);
                let field = |f: &str| {
                    device_text.split(", ").find_map(|p| p.strip_prefix(f)).map(|v| v.trim_end_matches('>').to_owned())
                };
                self.list.push(SourceInfo {
                    name: text(name).into_owned(),
                    device_name: field("name:"),
                    model: field("model:"),
                    key: key.clone(),
                });
                self.index.insert(key, id);
                id
            }
        }
    }

    pub fn get(&self, id: u32) -> Option<&SourceInfo> {
        self.list.get(id as usize)
    }
}

/// Reads top-level elements one at a time.
pub struct Parser<'f, 'a> {
    reader: Reader<&'f mut XmlFilter<'a>>,
    buf: Vec<u8>,
    skip_buf: Vec<u8>,
    started: bool,
    pub sources: Sources,
}

impl<'f, 'a> Parser<'f, 'a> {
    pub fn new(filter: &'f mut XmlFilter<'a>, sources: Sources) -> Self {
        let mut reader = Reader::from_reader(filter);
        reader.config_mut().check_end_names = false;
        // Whitespace between elements is never needed: skipping it saves an event per element.
        reader.config_mut().trim_text(true);
        Self { reader, buf: Vec::with_capacity(4096), skip_buf: Vec::with_capacity(4096), started: false, sources }
    }

    fn error(&self, e: quick_xml::Error) -> ImportError {
        use quick_xml::errors::SyntaxError as S;
        let line = self.reader.get_ref().line_at(self.reader.error_position());
        match e {
            quick_xml::Error::Io(io) => match io.get_ref().and_then(|r| r.downcast_ref::<ZipBombTripped>()) {
                Some(b) => ImportError::ZipBomb(b.0.clone()),
                None => from_io(std::io::Error::new(io.kind(), ArcIo(io))),
            },
            quick_xml::Error::Syntax(
                s @ (S::UnclosedTag
                | S::UnclosedCData
                | S::UnclosedComment
                | S::UnclosedDoctype
                | S::UnclosedPIOrXmlDecl),
            ) => ImportError::Truncated(format!("the XML ends inside an element at line {line}: {s}")),
            other => ImportError::Xml { line, message: other.to_string() },
        }
    }

    /// The next top-level element, `None` after `</HealthData>`. With `skip`, the element is passed over
    /// unread (its attributes are not even scanned).
    pub fn next(&mut self, skip: bool) -> Result<Option<Item>, ImportError> {
        if !self.started {
            self.start()?;
        }
        loop {
            self.buf.clear();
            let event = match self.reader.read_event_into(&mut self.buf) {
                Ok(e) => e,
                Err(e) => return Err(self.error(e)),
            };
            let (e, has_children) = match event {
                Event::Start(e) => (e, true),
                Event::Empty(e) => (e, false),
                Event::End(_) => return Ok(None),
                Event::Eof => {
                    return Err(ImportError::Truncated("the XML ends before </HealthData>".into()));
                }
                _ => continue,
            };
            let item = if skip {
                Item::Skipped
            } else {
                match e.local_name().as_ref() {
                    b"Record" => record(&e, &mut self.sources).map_or(Item::Other, Item::Record),
                    b"Workout" => Item::Workout(Box::new(workout(&e, &mut self.sources))),
                    b"ActivitySummary" => activity_summary(&e),
                    b"Correlation" => Item::Correlation,
                    _ => Item::Other,
                }
            };
            if has_children {
                // The name is needed to find the element's end; known ones are not copied.
                let name: Cow<'static, [u8]> = match e.name().as_ref() {
                    b"Record" => Cow::Borrowed(b"Record"),
                    b"Workout" => Cow::Borrowed(b"Workout"),
                    b"Correlation" => Cow::Borrowed(b"Correlation"),
                    other => Cow::Owned(other.to_vec()),
                };
                return self.children(&name, item).map(Some);
            }
            return Ok(Some(item));
        }
    }

    /// Reads up to the root element; anything but `HealthData` there is not an export.
    fn start(&mut self) -> Result<(), ImportError> {
        loop {
            self.buf.clear();
            match self.reader.read_event_into(&mut self.buf) {
                Ok(Event::Start(e)) if e.local_name().as_ref() == b"HealthData" => {
                    self.started = true;
                    return Ok(());
                }
                Ok(Event::Start(e) | Event::Empty(e)) => {
                    let root = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    return Err(ImportError::NotAnExport(format!(
                        "the XML's root element is <{root}>, not <HealthData>; upload export.xml or export.zip"
                    )));
                }
                Ok(Event::Eof) => {
                    return Err(ImportError::NotAnExport("the file holds no <HealthData> element".into()));
                }
                Ok(Event::Text(t)) if t.iter().any(|c| !c.is_ascii_whitespace()) => {
                    return Err(ImportError::NotAnExport("the file is not XML".into()));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(match self.error(e) {
                        ImportError::Xml { .. } | ImportError::Truncated(_) => {
                            ImportError::NotAnExport("the file is not XML".into())
                        }
                        other => other,
                    });
                }
            }
        }
    }

    /// Reads an element's children up to its end: beats of HRV records, statistics of workouts; the rest
    /// (metadata, routes, a Correlation's nested Records) is passed over.
    fn children(&mut self, name: &[u8], mut item: Item) -> Result<Item, ImportError> {
        let wanted = matches!(item, Item::Record(_) | Item::Workout(_));
        if !wanted {
            let end = quick_xml::name::QName(name);
            self.skip_buf.clear();
            if let Err(e) = self.reader.read_to_end_into(end, &mut self.skip_buf) {
                return Err(self.error(e));
            }
            return Ok(item);
        }
        let mut depth = 0usize;
        loop {
            self.skip_buf.clear();
            let event = match self.reader.read_event_into(&mut self.skip_buf) {
                Ok(e) => e,
                Err(e) => return Err(self.error(e)),
            };
            let e = match event {
                Event::Start(e) => {
                    depth += 1;
                    e
                }
                Event::Empty(e) => e,
                Event::End(_) if depth == 0 => return Ok(item),
                Event::End(_) => {
                    depth -= 1;
                    continue;
                }
                Event::Eof => return Err(ImportError::Truncated("the XML ends inside an element".into())),
                _ => continue,
            };
            match (&mut item, e.local_name().as_ref()) {
                (Item::Record(r), b"InstantaneousBeatsPerMinute") => r.beats += 1,
                (Item::Workout(w), b"WorkoutStatistics") => statistics(&e, w),
                _ => {}
            }
        }
    }
}

/// Carries quick-xml's shared io error (and a zip bomb refusal inside it) back into a plain `io::Error`.
#[derive(Debug)]
struct ArcIo(std::sync::Arc<std::io::Error>);

impl std::fmt::Display for ArcIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcIo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// An attribute value as text, entities resolved.
pub fn text(v: &[u8]) -> Cow<'_, str> {
    let s = String::from_utf8_lossy(v);
    if !s.contains('&') {
        return s;
    }
    match quick_xml::escape::unescape(&s) {
        Ok(u) => Cow::Owned(u.into_owned()),
        Err(_) => s,
    }
}

/// Calls `f(name, raw value)` for each attribute while it returns `true`; whitespace inside a name is
/// dropped (2015 exports). One pass over the names; values are skipped with memchr (`device` is long).
pub fn each_attr<'b>(raw: &'b [u8], mut f: impl FnMut(&[u8], &'b [u8]) -> bool) {
    let n = raw.len();
    let mut i = 0;
    loop {
        while i < n && raw[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        let mut spaced = false;
        while i < n && raw[i] != b'=' {
            spaced |= raw[i].is_ascii_whitespace();
            i += 1;
        }
        if i >= n {
            return;
        }
        let key = &raw[key_start..i];
        i += 1;
        while i < n && raw[i].is_ascii_whitespace() {
            i += 1;
        }
        let Some(&q) = raw.get(i).filter(|&&q| q == b'"' || q == b'\'') else { return };
        let Some(end) = memchr::memchr(q, &raw[i + 1..]).map(|p| p + i + 1) else { return };
        let value = &raw[i + 1..end];
        let more = if spaced {
            let joined: Vec<u8> = key.iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
            f(&joined, value)
        } else {
            f(key, value)
        };
        if !more {
            return;
        }
        i = end + 1;
    }
}

fn number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(trim(v)).ok()?.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn record(e: &BytesStart<'_>, sources: &mut Sources) -> Option<Record> {
    let raw = e.attributes_raw();
    let (mut kind, mut unit, mut value, mut name, mut device, mut start, mut end) =
        (None, &b""[..], &b""[..], &b""[..], &b""[..], &b""[..], &b""[..]);
    each_attr(raw, |k, v| {
        match k {
            b"type" => {
                kind = Kind::from_type(v);
                // An unmapped type: the rest is not worth reading.
                return kind.is_some();
            }
            b"unit" => unit = v,
            b"value" => value = v,
            b"sourceName" => name = v,
            b"device" => device = v,
            b"startDate" => start = v,
            b"endDate" => end = v,
            _ => {}
        }
        true
    });
    let kind = kind?;
    let start_stamp = Stamp::parse(start)?;
    // Instant samples (heart rate) repeat the start as the end: parse it once.
    let end = if end == start { start_stamp } else { Stamp::parse(end).unwrap_or(start_stamp) };
    let start = start_stamp;
    let (value, stage) = if kind == Kind::Sleep {
        (0.0, Some(Stage::parse(trim(value))?))
    } else {
        (kind.convert(trim(unit), number(value)?), None)
    };
    Some(Record { kind, source: sources.intern(name, device), value, stage, start, end, beats: 0 })
}

fn workout(e: &BytesStart<'_>, sources: &mut Sources) -> WorkoutRecord {
    let mut w = WorkoutRecord::default();
    let (mut name, mut device) = (&b""[..], &b""[..]);
    let (mut dist, mut dist_unit, mut energy, mut energy_unit, mut duration, mut duration_unit) =
        (None, &b"km"[..], None, &b"kcal"[..], None, &b"min"[..]);
    each_attr(e.attributes_raw(), |k, v| {
        match k {
            b"workoutActivityType" => {
                let t = text(v);
                w.activity = t.strip_prefix("HKWorkoutActivityType").unwrap_or(&t).to_owned();
            }
            b"sourceName" => name = v,
            b"device" => device = v,
            b"startDate" => w.start = Stamp::parse(v),
            b"endDate" => w.end = Stamp::parse(v),
            b"duration" => duration = number(v),
            b"durationUnit" => duration_unit = v,
            b"totalDistance" => dist = number(v),
            b"totalDistanceUnit" => dist_unit = v,
            b"totalEnergyBurned" => energy = number(v),
            b"totalEnergyBurnedUnit" => energy_unit = v,
            _ => {}
        }
        true
    });
    w.source = sources.intern(name, device);
    w.duration_min = duration.map(|d| match duration_unit {
        b"s" => d / 60.0,
        b"hr" | b"h" => d * 60.0,
        _ => d,
    });
    w.distance_m = dist.map(|d| Kind::DistanceM.convert(dist_unit, d)).filter(|d| *d > 0.0);
    w.energy_kcal = energy.map(|v| Kind::ActiveKcal.convert(energy_unit, v)).filter(|v| *v > 0.0);
    w
}

fn statistics(e: &BytesStart<'_>, w: &mut WorkoutRecord) {
    let (mut ty, mut unit, mut sum, mut avg, mut max) = (&b""[..], &b""[..], None, None, None);
    each_attr(e.attributes_raw(), |k, v| {
        match k {
            b"type" => ty = v,
            b"unit" => unit = v,
            b"sum" => sum = number(v),
            b"average" => avg = number(v),
            b"maximum" => max = number(v),
            _ => {}
        }
        true
    });
    w.statistics += 1;
    match ty {
        b"HKQuantityTypeIdentifierDistanceWalkingRunning"
        | b"HKQuantityTypeIdentifierDistanceCycling"
        | b"HKQuantityTypeIdentifierDistanceSwimming" => {
            if let Some(s) = sum {
                w.distance_m = Some(Kind::DistanceM.convert(unit, s));
            }
        }
        b"HKQuantityTypeIdentifierActiveEnergyBurned" => {
            if let Some(s) = sum {
                w.energy_kcal = Some(Kind::ActiveKcal.convert(unit, s));
            }
        }
        b"HKQuantityTypeIdentifierHeartRate" => {
            w.avg_heart_rate = avg.or(w.avg_heart_rate);
            w.max_heart_rate = max.or(w.max_heart_rate);
        }
        _ => {}
    }
}

fn activity_summary(e: &BytesStart<'_>) -> Item {
    let (mut day, mut kcal, mut unit) = (None, None, &b"kcal"[..]);
    each_attr(e.attributes_raw(), |k, v| {
        match k {
            b"dateComponents" => {
                day = Stamp::parse(&[trim(v), b" 00:00:00 +0000"].concat()).map(|s| s.day);
            }
            b"activeEnergyBurned" => kcal = number(v),
            b"activeEnergyBurnedUnit" => unit = v,
            _ => {}
        }
        true
    });
    match day {
        Some(day) => Item::ActivitySummary { day, active_kcal: kcal.map(|k| Kind::ActiveKcal.convert(unit, k)) },
        None => Item::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_date_reads_as_its_instant_offset_and_local_day() {
        let s = Stamp::parse(b"2019-05-14 23:05:29 -0400").expect("parses");
        assert_eq!(s.instant(), time::macros::datetime!(2019-05-15 03:05:29 UTC));
        assert_eq!(s.date(), time::macros::date!(2019 - 05 - 14));
        assert_eq!(s.offset(), time::macros::offset!(-04:00));
        let east = Stamp::parse(b"2020-01-01 00:30:00 +0530").expect("parses");
        assert_eq!(east.date(), time::macros::date!(2020 - 01 - 01));
        assert_eq!(east.instant(), time::macros::datetime!(2019-12-31 19:00:00 UTC));
        assert!(Stamp::parse(b"2019-13-01 00:00:00 +0000").is_none());
        assert!(Stamp::parse(b"yesterday").is_none());
    }

    #[test]
    fn attribute_names_with_spaces_read_as_without() {
        let mut seen = Vec::new();
        each_attr(b" type=\"A\" source Name='Phone' value = \"3\"", |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        });
        assert_eq!(
            seen,
            vec![
                (b"type".to_vec(), b"A".to_vec()),
                (b"sourceName".to_vec(), b"Phone".to_vec()),
                (b"value".to_vec(), b"3".to_vec())
            ]
        );
    }

    #[test]
    fn units_convert_to_the_models_and_spo2_fractions_become_percent() {
        assert_eq!(Kind::Spo2Pct.convert(b"%", 0.96), 96.0);
        assert_eq!(Kind::Spo2Pct.convert(b"%", 97.0), 97.0);
        assert_eq!(Kind::DistanceM.convert(b"km", 1.5), 1500.0);
        assert!((Kind::WeightKg.convert(b"lb", 150.0) - 68.038_855_5).abs() < 1e-6);
        assert!((Kind::ActiveKcal.convert(b"kJ", 418.4) - 100.0).abs() < 1e-9);
    }
}
