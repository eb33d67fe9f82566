//! A deterministic generator of realistic Apple Health exports for tests and benchmarks: iPhone and Watch
//! samples that overlap in known ways (so the merged daily totals are known by construction, not by running
//! the merge), every element kind the importer reads (Records with metadata, HRV with instantaneous beats,
//! SpO2 fractions, sleep stages, Correlations whose Records also appear at the top level, Workouts with
//! statistics, events and routes, ActivitySummaries), unmapped types and elements, the iOS 16 broken DTD and
//! stray `\x0b`. Written as a stream, so any size from KB to GB; [`write_zip`] packs it like the Health app
//! (with `export_cda.xml`, a route `.gpx` and an ECG `.csv`).

use std::collections::BTreeMap;
use std::io::{self, Seek, Write};

use time::Date;

use crate::parse::{day_to_date, days_from_civil};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    pub days: u32,
    /// Approximate size of the XML; heart rate samples are added to reach it (0: only the base content).
    pub target_bytes: u64,
    /// Whether to include the breakage of real exports (the iOS 16 DTD, stray `\x0b`); tools built on
    /// strict XML parsers (healthkit-to-sqlite) need an export without it.
    pub quirks: bool,
}

impl Spec {
    pub fn new(seed: u64, days: u32, target_bytes: u64) -> Self {
        Self { seed, days, target_bytes, quirks: true }
    }
}

/// What an import of the generated export must find, computed while generating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Steps per day merged with the Watch first (what Apple Health shows).
    pub steps: BTreeMap<Date, f64>,
    /// The naive sum of every source's steps, which a correct import must NOT produce.
    pub naive_steps: BTreeMap<Date, f64>,
    pub distance_m: BTreeMap<Date, f64>,
    pub active_kcal: BTreeMap<Date, f64>,
    pub total_kcal: BTreeMap<Date, f64>,
    pub sleep_total_min: BTreeMap<Date, f64>,
    pub sleep_deep_min: BTreeMap<Date, f64>,
    pub sleep_rem_min: BTreeMap<Date, f64>,
    pub spo2_pct: BTreeMap<Date, f64>,
    pub hrv_ms: BTreeMap<Date, f64>,
    pub resting_heart_rate: BTreeMap<Date, f64>,
    pub weight_kg: BTreeMap<Date, f64>,
    pub workouts: u64,
    pub sleep_sessions: u64,
    pub correlations: u64,
    pub heart_rate_samples: u64,
    pub hrv_samples: u64,
    pub beat_entries: u64,
    pub activity_summaries: u64,
    /// Top-level elements under `HealthData`.
    pub top_level: u64,
    pub xml_bytes: u64,
}

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The export's local offset: US Eastern standard time.
const OFFSET: i64 = -5 * 3600;
const FIRST_DAY: (i64, i64, i64) = (2024, 1, 1);
const WATCH: &str = "Alex\u{2019}s Apple Watch";
const PHONE: &str = "Alex\u{2019}s iPhone";
const WATCH_DEVICE: &str = "&lt;&lt;HKDevice: 0x300f6a210&gt;, name:Apple Watch, manufacturer:Apple Inc., model:Watch, hardware:Watch6,2, software:10.2&gt;";
const PHONE_DEVICE: &str = "&lt;&lt;HKDevice: 0x300f6a3f0&gt;, name:iPhone, manufacturer:Apple Inc., model:iPhone, hardware:iPhone15,2, software:17.2&gt;";

/// The iOS 16 DTD, shortened, with its bug: no `>` after `ATTLIST VisionPrescription`.
const DTD: &str = r#"<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 14 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary|ClinicalRecord|Audiogram|VisionPrescription)*)>
<!ATTLIST HealthData
  locale CDATA #REQUIRED
>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate
  value CDATA #REQUIRED
>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ATTLIST Record
  type          CDATA #REQUIRED
  unit          CDATA #IMPLIED
  value         CDATA #IMPLIED
  sourceName    CDATA #REQUIRED
  sourceVersion CDATA #IMPLIED
  device        CDATA #IMPLIED
  creationDate  CDATA #IMPLIED
  startDate     CDATA #REQUIRED
  endDate       CDATA #REQUIRED
>
<!ELEMENT VisionPrescription ((RightEye|LeftEye|Attachment|MetadataEntry)*)>
<!ATTLIST VisionPrescription
  type             CDATA #REQUIRED
  dateIssued       CDATA #REQUIRED
  expirationDate   CDATA #IMPLIED
  brand            CDATA #IMPLIED

<!ELEMENT RightEye EMPTY>
<!ATTLIST RightEye
  sphere CDATA #IMPLIED
>
]>
"#;

struct Out<W: Write> {
    w: W,
    bytes: u64,
    top: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, s: &str) -> io::Result<()> {
        self.bytes += s.len() as u64;
        self.w.write_all(s.as_bytes())
    }
}

/// `YYYY-MM-DD HH:MM:SS -0500` of a local day and second of that day (may run past midnight).
fn stamp(day: i64, secs: i64) -> String {
    let local = day * 86_400 + secs;
    let d = day_to_date(local.div_euclid(86_400) as i32);
    let s = local.rem_euclid(86_400);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} -0500",
        d.year(),
        d.month() as u8,
        d.day(),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn date(day: i64) -> Date {
    day_to_date(day as i32)
}

#[allow(clippy::too_many_arguments)]
fn record<W: Write>(
    o: &mut Out<W>,
    ty: &str,
    phone: bool,
    unit: &str,
    value: &str,
    day: i64,
    start: i64,
    end: i64,
    children: &str,
) -> io::Result<()> {
    let (name, device) = if phone { (PHONE, PHONE_DEVICE) } else { (WATCH, WATCH_DEVICE) };
    let unit = if unit.is_empty() { String::new() } else { format!(" unit=\"{unit}\"") };
    let head = format!(
        "  <Record type=\"{ty}\" sourceName=\"{name}\" sourceVersion=\"10.2\" device=\"{device}\"{unit} creationDate=\"{}\" startDate=\"{}\" endDate=\"{}\" value=\"{value}\"",
        stamp(day, end + 60),
        stamp(day, start),
        stamp(day, end)
    );
    o.top += 1;
    if children.is_empty() {
        o.put(&head)?;
        o.put("/>\n")
    } else {
        o.put(&head)?;
        o.put(">\n")?;
        o.put(children)?;
        o.put("  </Record>\n")
    }
}

/// One step sample: (phone?, start, end, steps) in seconds of the day.
type StepSample = (bool, i64, i64, u64);

/// The day's step samples in start order, with the merged (Watch first) and naive totals.
fn day_steps(rng: &mut Rng) -> (Vec<StepSample>, f64, f64) {
    let mut samples = Vec::new();
    let (mut merged, mut naive) = (0.0, 0.0);
    for hour in 7..22 {
        let t = hour * 3600 + (rng.below(4) as i64) * 600;
        let w = 100 + rng.below(400);
        let p = 2 * (50 + rng.below(200));
        match rng.below(4) {
            // Watch only.
            0 => {
                samples.push((false, t, t + 600, w));
                merged += w as f64;
                naive += w as f64;
            }
            // Both over the same interval: the iPhone's is covered.
            1 => {
                samples.push((false, t, t + 600, w));
                samples.push((true, t, t + 600, p));
                merged += w as f64;
                naive += (w + p) as f64;
            }
            // The iPhone's sample half covered: half of it counts.
            2 => {
                samples.push((false, t, t + 600, w));
                samples.push((true, t + 300, t + 900, p));
                merged += w as f64 + p as f64 / 2.0;
                naive += (w + p) as f64;
            }
            // iPhone only (the watch was charging).
            _ => {
                samples.push((true, t, t + 600, p));
                merged += p as f64;
                naive += p as f64;
            }
        }
    }
    samples.sort_by_key(|s| (s.1, s.0));
    (samples, merged, naive)
}

/// Writes a generated export.xml to `w` and returns what importing it must find.
pub fn write_xml(spec: Spec, w: impl Write) -> io::Result<Expected> {
    let mut o = Out { w: io::BufWriter::with_capacity(256 << 10, w), bytes: 0, top: 0 };
    let mut e = Expected::default();
    let first = days_from_civil(FIRST_DAY.0, FIRST_DAY.1, FIRST_DAY.2);
    let days: Vec<i64> = (0..i64::from(spec.days)).map(|i| first + i).collect();
    let _ = OFFSET;

    o.put("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
    if spec.quirks {
        o.put(DTD)?;
    }
    let vt = if spec.quirks { "\x0b" } else { "" };
    o.put("<HealthData locale=\"en_US\">\n")?;
    o.put(&format!(" <ExportDate value=\"{}\"/>\n", stamp(first + i64::from(spec.days), 3600)))?;
    // A stray vertical tab, as real exports carry in free text.
    o.put(&format!(" <Me HKCharacteristicTypeIdentifierDateOfBirth=\"1990-02-02\" HKCharacteristicTypeIdentifierBiologicalSex=\"HKBiologicalSexNotSet{vt}\"/>\n"))?;
    o.top += 2;

    // Steps and distance (iPhone and Watch overlapping), one section per type as Apple writes them.
    let mut rng = Rng(spec.seed);
    let step_days: Vec<(Vec<StepSample>, f64, f64)> = days.iter().map(|_| day_steps(&mut rng)).collect();
    for (day, (samples, merged, naive)) in days.iter().zip(&step_days) {
        for &(phone, s, end, n) in samples {
            record(&mut o, "HKQuantityTypeIdentifierStepCount", phone, "count", &n.to_string(), *day, s, end, "")?;
        }
        e.steps.insert(date(*day), *merged);
        e.naive_steps.insert(date(*day), *naive);
    }
    for (day, (samples, merged, _)) in days.iter().zip(&step_days) {
        for &(phone, s, end, n) in samples {
            // 0.75 m a step, written in km.
            let km = n as f64 * 0.00075;
            record(
                &mut o,
                "HKQuantityTypeIdentifierDistanceWalkingRunning",
                phone,
                "km",
                &km.to_string(),
                *day,
                s,
                end,
                "",
            )?;
        }
        e.distance_m.insert(date(*day), merged * 0.75);
    }

    // Active energy from the Watch each hour, except every tenth day (the ActivitySummary fills it in);
    // basal energy each hour.
    let mut rng = Rng(spec.seed ^ 0xA11CE);
    let mut active: BTreeMap<Date, f64> = BTreeMap::new();
    for day in &days {
        if (day - first) % 10 == 9 {
            continue;
        }
        let mut sum = 0.0;
        for hour in 6..23 {
            let kcal = (10 + rng.below(40)) as f64;
            sum += kcal;
            record(
                &mut o,
                "HKQuantityTypeIdentifierActiveEnergyBurned",
                false,
                "kcal",
                &kcal.to_string(),
                *day,
                hour * 3600,
                hour * 3600 + 3000,
                "",
            )?;
        }
        active.insert(date(*day), sum);
    }
    for day in &days {
        let mut sum = 0.0;
        for hour in 0..24 {
            let kcal = 60.0 + (hour % 3) as f64;
            sum += kcal;
            record(
                &mut o,
                "HKQuantityTypeIdentifierBasalEnergyBurned",
                false,
                "kcal",
                &kcal.to_string(),
                *day,
                hour * 3600,
                hour * 3600 + 3600,
                "",
            )?;
        }
        if let Some(a) = active.get(&date(*day)) {
            e.total_kcal.insert(date(*day), a + sum);
        }
    }

    // Heart rate from the Watch, dense enough to reach the target size.
    let base_estimate = 40_000 * u64::from(spec.days);
    let per_day = spec.target_bytes.saturating_sub(base_estimate) / 420 / u64::from(spec.days.max(1));
    let per_day = per_day.clamp(24, 86_400 / 5) as i64;
    let step = 86_400 / per_day;
    let mut rng = Rng(spec.seed ^ 0x4EA7);
    for (i, day) in days.iter().enumerate() {
        for k in 0..per_day {
            let t = k * step;
            let bpm = 55 + rng.below(60);
            let meta = if i == 0 && k == 0 && spec.quirks {
                // Another stray control character, inside metadata.
                "    <MetadataEntry key=\"HKMetadataKeyHeartRateMotionContext\" value=\"0\x0b\"/>\n"
            } else if k % 4 == 0 {
                "    <MetadataEntry key=\"HKMetadataKeyHeartRateMotionContext\" value=\"1\"/>\n"
            } else {
                ""
            };
            record(
                &mut o,
                "HKQuantityTypeIdentifierHeartRate",
                false,
                "count/min",
                &bpm.to_string(),
                *day,
                t,
                t,
                meta,
            )?;
            e.heart_rate_samples += 1;
        }
    }

    // Resting heart rate, HRV with instantaneous beats, SpO2 as fractions.
    for (i, day) in days.iter().enumerate() {
        let rhr = 50.0 + (i % 9) as f64;
        record(
            &mut o,
            "HKQuantityTypeIdentifierRestingHeartRate",
            false,
            "count/min",
            &rhr.to_string(),
            *day,
            60,
            86_000,
            "",
        )?;
        e.resting_heart_rate.insert(date(*day), rhr);
    }
    for (i, day) in days.iter().enumerate() {
        let values = [30.0 + (i % 20) as f64, 45.5, 60.0];
        for (k, v) in values.iter().enumerate() {
            let t = 2 * 3600 + k as i64 * 4 * 3600;
            let mut beats = String::from("    <HeartRateVariabilityMetadataList>\n");
            for b in 0..5 {
                beats.push_str(&format!(
                    "      <InstantaneousBeatsPerMinute bpm=\"{}\" time=\"{}:{:02}:{:02}.{:02} AM\"/>\n",
                    60 + b,
                    2 + 4 * k,
                    0,
                    b,
                    b * 7
                ));
            }
            beats.push_str("    </HeartRateVariabilityMetadataList>\n");
            record(
                &mut o,
                "HKQuantityTypeIdentifierHeartRateVariabilitySDNN",
                false,
                "ms",
                &v.to_string(),
                *day,
                t,
                t + 60,
                &beats,
            )?;
            e.hrv_samples += 1;
            e.beat_entries += 5;
        }
        e.hrv_ms.insert(date(*day), values.iter().sum::<f64>() / 3.0);
    }
    for day in &days {
        let fractions = [0.96, 0.98, 0.97];
        for (k, f) in fractions.iter().enumerate() {
            let t = 3 * 3600 + k as i64 * 1800;
            record(&mut o, "HKQuantityTypeIdentifierOxygenSaturation", false, "%", &f.to_string(), *day, t, t, "")?;
        }
        e.spo2_pct.insert(date(*day), 97.0);
    }
    // Body mass weekly from a scale app, in pounds.
    for (i, day) in days.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
        let lb = 170.0 + (i / 7) as f64 * 0.5;
        o.top += 1;
        o.put(&format!(
            "  <Record type=\"HKQuantityTypeIdentifierBodyMass\" sourceName=\"Withings\" sourceVersion=\"6.3\" unit=\"lb\" creationDate=\"{0}\" startDate=\"{0}\" endDate=\"{0}\" value=\"{lb}\"/>\n",
            stamp(*day, 7 * 3600)
        ))?;
        e.weight_kg.insert(date(*day), lb * 0.453_592_37);
    }
    // Types the importer does not map.
    for day in &days {
        o.top += 1;
        o.put(&format!(
            "  <Record type=\"HKQuantityTypeIdentifierDietaryWater\" sourceName=\"{PHONE}\" unit=\"mL\" creationDate=\"{0}\" startDate=\"{0}\" endDate=\"{0}\" value=\"250\"/>\n",
            stamp(*day, 9 * 3600)
        ))?;
    }

    // Sleep: the Watch's stages from 23:00 the evening before, and the iPhone's in-bed and unspecified
    // asleep span around them. The iPhone's asleep minutes count only where the Watch has no asleep stage
    // (its 5 awake minutes at 03:00).
    let stages: [(&str, i64); 9] = [
        ("AsleepCore", 60),
        ("AsleepDeep", 45),
        ("AsleepCore", 30),
        ("AsleepREM", 25),
        ("AsleepCore", 60),
        ("Awake", 5),
        ("AsleepDeep", 40),
        ("AsleepREM", 35),
        ("AsleepCore", 180),
    ];
    for day in &days {
        let evening = day - 1;
        let mut t = 23 * 3600;
        let (mut asleep, mut deep, mut rem) = (0.0, 0.0, 0.0);
        let begin = t;
        for (stage, minutes) in stages {
            let end = t + minutes * 60;
            record(
                &mut o,
                "HKCategoryTypeIdentifierSleepAnalysis",
                false,
                "",
                &format!("HKCategoryValueSleepAnalysis{stage}"),
                evening,
                t,
                end,
                "",
            )?;
            let m = minutes as f64;
            match stage {
                "AsleepDeep" => deep += m,
                "AsleepREM" => rem += m,
                _ => {}
            }
            if stage != "Awake" {
                asleep += m;
            }
            t = end;
        }
        record(
            &mut o,
            "HKCategoryTypeIdentifierSleepAnalysis",
            true,
            "",
            "HKCategoryValueSleepAnalysisInBed",
            evening,
            begin - 900,
            t + 600,
            "",
        )?;
        record(
            &mut o,
            "HKCategoryTypeIdentifierSleepAnalysis",
            true,
            "",
            "HKCategoryValueSleepAnalysisAsleepUnspecified",
            evening,
            begin + 600,
            t - 600,
            "",
        )?;
        e.sleep_total_min.insert(date(*day), asleep + 5.0);
        e.sleep_deep_min.insert(date(*day), deep);
        e.sleep_rem_min.insert(date(*day), rem);
        e.sleep_sessions += 2;
    }

    // Correlations: their Records are also written at the top level (unmapped types here).
    for (i, day) in days.iter().enumerate().filter(|(i, _)| i % 7 == 3) {
        let t = stamp(*day, 8 * 3600);
        let bp = |ty: &str, v: u32| {
            format!(
                "    <Record type=\"{ty}\" sourceName=\"Omron\" unit=\"mmHg\" creationDate=\"{t}\" startDate=\"{t}\" endDate=\"{t}\" value=\"{v}\"/>\n"
            )
        };
        let (sys, dia) = (
            bp("HKQuantityTypeIdentifierBloodPressureSystolic", 120 + (i % 5) as u32),
            bp("HKQuantityTypeIdentifierBloodPressureDiastolic", 80),
        );
        o.put(&format!(
            "  <Correlation type=\"HKCorrelationTypeIdentifierBloodPressure\" sourceName=\"Omron\" creationDate=\"{t}\" startDate=\"{t}\" endDate=\"{t}\">\n    <MetadataEntry key=\"HKWasUserEntered\" value=\"0\"/>\n{sys}{dia}  </Correlation>\n"
        ))?;
        o.put(&sys[2..])?;
        o.put(&dia[2..])?;
        let food = format!(
            "    <Record type=\"HKQuantityTypeIdentifierDietaryEnergyConsumed\" sourceName=\"MyFitnessPal\" unit=\"kcal\" creationDate=\"{t}\" startDate=\"{t}\" endDate=\"{t}\" value=\"540\"/>\n"
        );
        o.put(&format!(
            "  <Correlation type=\"HKCorrelationTypeIdentifierFood\" sourceName=\"MyFitnessPal\" creationDate=\"{t}\" startDate=\"{t}\" endDate=\"{t}\">\n    <MetadataEntry key=\"meal\" value=\"Breakfast\"/>\n{food}  </Correlation>\n"
        ))?;
        o.put(&food[2..])?;
        o.top += 2 + 3;
        e.correlations += 2;
    }

    // Workouts every third day, with statistics, events, metadata and a route.
    for (i, day) in days.iter().enumerate().filter(|(i, _)| i % 3 == 1) {
        let (s, end) = (17 * 3600, 17 * 3600 + 1800 + (i % 4) as i64 * 60);
        let (ts, te) = (stamp(*day, s), stamp(*day, end));
        let km = 5.0 + (i % 3) as f64 * 0.5;
        o.put(&format!(
            "  <Workout workoutActivityType=\"HKWorkoutActivityTypeRunning\" duration=\"{}\" durationUnit=\"min\" sourceName=\"{WATCH}\" sourceVersion=\"10.2\" device=\"{WATCH_DEVICE}\" creationDate=\"{te}\" startDate=\"{ts}\" endDate=\"{te}\">\n",
            (end - s) as f64 / 60.0
        ))?;
        o.put("    <MetadataEntry key=\"HKIndoorWorkout\" value=\"0\"/>\n")?;
        o.put(&format!("    <WorkoutEvent type=\"HKWorkoutEventTypeSegment\" date=\"{ts}\" duration=\"10\" durationUnit=\"min\"/>\n"))?;
        o.put(&format!("    <WorkoutStatistics type=\"HKQuantityTypeIdentifierActiveEnergyBurned\" startDate=\"{ts}\" endDate=\"{te}\" sum=\"{}\" unit=\"kcal\"/>\n", 300 + i))?;
        o.put(&format!("    <WorkoutStatistics type=\"HKQuantityTypeIdentifierDistanceWalkingRunning\" startDate=\"{ts}\" endDate=\"{te}\" sum=\"{km}\" unit=\"km\"/>\n"))?;
        o.put(&format!("    <WorkoutStatistics type=\"HKQuantityTypeIdentifierHeartRate\" startDate=\"{ts}\" endDate=\"{te}\" average=\"151\" minimum=\"120\" maximum=\"178\" unit=\"count/min\"/>\n"))?;
        o.put(&format!("    <WorkoutRoute sourceName=\"{WATCH}\" creationDate=\"{te}\" startDate=\"{ts}\" endDate=\"{te}\">\n      <FileReference path=\"/workout-routes/route_{i}.gpx\"/>\n    </WorkoutRoute>\n"))?;
        o.put("  </Workout>\n")?;
        o.top += 1;
        e.workouts += 1;
    }

    // Elements the importer does not know.
    o.put("  <VisionPrescription type=\"glasses\" dateIssued=\"2023-06-01 00:00:00 -0500\"><RightEye sphere=\"-1.25\"/></VisionPrescription>\n")?;
    o.put("  <Audiogram type=\"HKDataTypeIdentifierAudiogram\" sourceName=\"Mimi\" startDate=\"2023-06-01 00:00:00 -0500\" endDate=\"2023-06-01 00:00:00 -0500\"/>\n")?;
    o.top += 2;

    // Activity summaries at the end, as Apple writes them.
    for day in &days {
        let d = date(*day);
        let kcal = if let Some(a) = active.get(&d) { *a } else { 321.5 };
        e.active_kcal.insert(d, kcal);
        o.put(&format!(
            "  <ActivitySummary dateComponents=\"{:04}-{:02}-{:02}\" activeEnergyBurned=\"{kcal}\" activeEnergyBurnedGoal=\"500\" activeEnergyBurnedUnit=\"kcal\" appleMoveTime=\"0\" appleMoveTimeGoal=\"0\" appleExerciseTime=\"31\" appleExerciseTimeGoal=\"30\" appleStandHours=\"11\" appleStandHoursGoal=\"12\"/>\n",
            d.year(),
            d.month() as u8,
            d.day()
        ))?;
        o.top += 1;
        e.activity_summaries += 1;
    }
    o.put("</HealthData>\n")?;
    o.w.flush()?;
    e.top_level = o.top;
    e.xml_bytes = o.bytes;
    Ok(e)
}

/// Writes an export.zip like the Health app's: `apple_health_export/<xml_name>`, `export_cda.xml` (several
/// root elements, as Apple's is), a route and an ECG. `xml_name` lets tests use localized names.
pub fn write_zip(spec: Spec, xml_name: &str, w: impl Write + Seek) -> io::Result<Expected> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(w);
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(spec.target_bytes > (3 << 30));
    let err = |e: zip::result::ZipError| io::Error::other(e.to_string());
    z.start_file("apple_health_export/export_cda.xml", opts).map_err(err)?;
    z.write_all(b"<?xml version=\"1.0\"?>\n<ClinicalDocument><component/></ClinicalDocument>\n<ClinicalDocument/>\n")?;
    z.start_file(format!("apple_health_export/{xml_name}"), opts).map_err(err)?;
    let expected = write_xml(spec, &mut z)?;
    z.start_file("apple_health_export/workout-routes/route_1.gpx", opts).map_err(err)?;
    z.write_all(b"<?xml version=\"1.0\"?><gpx version=\"1.1\"><trk><trkseg><trkpt lat=\"40.7\" lon=\"-74.0\"/></trkseg></trk></gpx>\n")?;
    z.start_file("apple_health_export/electrocardiograms/ecg_2024-01-05.csv", opts).map_err(err)?;
    z.write_all(b"Name,Alex\nSample Rate,512 hertz\n12.1\n13.4\n")?;
    z.finish().map_err(err)?;
    Ok(expected)
}
