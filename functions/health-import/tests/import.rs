//! The importer end to end on generated exports and hand-made edge cases: merged totals, resumes, refusals.

use std::collections::BTreeMap;
use std::io::Cursor;

use health_import::generate::{Expected, Spec, write_xml, write_zip};
use health_import::{Checkpoint, ImportError, Importer, Limits, Options, Outcome, Sink, Stats};
use shared::model::{Batch, Metric, SampleKind};
use time::Date;

/// Keeps every batch, checking the size promise.
#[derive(Default)]
struct Collect {
    batches: Vec<Batch>,
    max_items: usize,
}

impl Sink for Collect {
    fn write(&mut self, batch: Batch) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut hours: Vec<(SampleKind, i64)> =
            batch.samples.iter().map(|s| (s.kind, s.time.unix_timestamp().div_euclid(3600))).collect();
        hours.dedup();
        let items = batch.daily.len() + batch.sleep.len() + batch.workouts.len() + hours.len();
        assert!(items <= self.max_items.max(25), "a batch of {items} items");
        self.batches.push(batch);
        Ok(())
    }
}

impl Collect {
    /// Every item written, in order, as JSON: what the store would hold, batch boundaries aside.
    fn items(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.batches {
            out.extend(b.daily.iter().map(|d| format!("daily {}", serde_json::to_string(d).unwrap_or_default())));
            out.extend(b.sleep.iter().map(|d| format!("sleep {}", serde_json::to_string(d).unwrap_or_default())));
            out.extend(b.workouts.iter().map(|d| format!("workout {}", serde_json::to_string(d).unwrap_or_default())));
            out.extend(b.samples.iter().map(|d| format!("sample {}", serde_json::to_string(d).unwrap_or_default())));
        }
        out.sort();
        out
    }

    /// Daily metrics per day, later records overriding earlier ones per metric (as the store's update does).
    fn daily(&self) -> BTreeMap<Date, BTreeMap<Metric, f64>> {
        let mut days: BTreeMap<Date, BTreeMap<Metric, f64>> = BTreeMap::new();
        for d in self.batches.iter().flat_map(|b| &b.daily) {
            days.entry(d.day).or_default().extend(d.metrics.iter().map(|(k, v)| (*k, *v)));
        }
        days
    }

    fn count(&self, f: impl Fn(&Batch) -> usize) -> usize {
        self.batches.iter().map(f).sum()
    }
}

fn generated(days: u32) -> (Vec<u8>, Expected) {
    let mut xml = Vec::new();
    let expected = write_xml(Spec::new(7, days, 0), &mut xml).expect("generates");
    (xml, expected)
}

fn import(input: &[u8], options: Options) -> Result<(Collect, Stats), ImportError> {
    let mut sink = Collect { max_items: options.batch_items, ..Collect::default() };
    match Importer::new(options).run(input, &mut sink, None, |_| false)? {
        Outcome::Completed(stats) => Ok((sink, stats)),
        Outcome::Paused(_) => panic!("paused without being asked"),
    }
}

fn assert_close(metric: Metric, got: &BTreeMap<Date, BTreeMap<Metric, f64>>, want: &BTreeMap<Date, f64>) {
    assert!(!want.is_empty());
    for (day, w) in want {
        let g = got.get(day).and_then(|m| m.get(&metric)).copied();
        assert!(g.is_some_and(|g| (g - w).abs() < 1e-6 * w.abs().max(1.0)), "{metric} on {day}: got {g:?}, want {w}");
    }
}

#[test]
fn a_days_steps_are_merged_by_source_priority_not_summed() {
    let (xml, expected) = generated(20);
    let (sink, _) = import(&xml, Options::default()).expect("imports");
    let daily = sink.daily();
    assert_close(Metric::Steps, &daily, &expected.steps);
    assert_close(Metric::DistanceM, &daily, &expected.distance_m);
    let differs = expected.steps.iter().filter(|(d, s)| expected.naive_steps[*d] > **s + 1.0).count();
    assert!(differs >= 15, "the generated overlaps make the naive sum differ on most days ({differs})");
}

#[test]
fn a_tenant_putting_the_iphone_first_gets_other_totals() {
    let (xml, expected) = generated(5);
    let options =
        Options { order: health_import::SourceOrder(vec!["iphone".into(), "watch".into()]), ..Options::default() };
    let (sink, _) = import(&xml, options).expect("imports");
    let daily = sink.daily();
    let same = expected.steps.iter().filter(|(d, s)| (daily[*d][&Metric::Steps] - **s).abs() < 1e-6).count();
    assert!(same < 5, "with the iPhone first the merged totals change");
    for (d, naive) in &expected.naive_steps {
        assert!(daily[d][&Metric::Steps] < *naive, "still never the naive sum");
    }
}

#[test]
fn every_mapped_kind_arrives_with_the_expected_values() {
    let (xml, e) = generated(12);
    let text = String::from_utf8_lossy(&xml);
    assert!(text.contains("ATTLIST VisionPrescription") && text.contains('\x0b'), "the broken DTD and \\x0b are there");
    let (sink, stats) = import(&xml, Options::default()).expect("imports despite the broken DTD and \\x0b");
    let daily = sink.daily();
    assert_close(Metric::ActiveEnergyKcal, &daily, &e.active_kcal);
    assert_close(Metric::TotalEnergyKcal, &daily, &e.total_kcal);
    assert_close(Metric::SleepTotalMin, &daily, &e.sleep_total_min);
    assert_close(Metric::SleepDeepMin, &daily, &e.sleep_deep_min);
    assert_close(Metric::SleepRemMin, &daily, &e.sleep_rem_min);
    assert_close(Metric::Spo2Pct, &daily, &e.spo2_pct);
    assert_close(Metric::HrvMs, &daily, &e.hrv_ms);
    assert_close(Metric::RestingHeartRate, &daily, &e.resting_heart_rate);
    assert_close(Metric::WeightKg, &daily, &e.weight_kg);
    assert_eq!(sink.count(|b| b.workouts.len()) as u64, e.workouts);
    assert_eq!(sink.count(|b| b.sleep.len()) as u64, e.sleep_sessions);
    let samples = sink.batches.iter().flat_map(|b| &b.samples);
    let hr = samples.clone().filter(|s| s.kind == SampleKind::HeartRate).count() as u64;
    let hrv = samples.filter(|s| s.kind == SampleKind::Hrv).count() as u64;
    assert_eq!((hr, hrv), (e.heart_rate_samples, e.hrv_samples));
    assert_eq!(stats.correlations, e.correlations);
    assert_eq!(stats.beat_entries, e.beat_entries);
    assert_eq!(stats.activity_summaries, e.activity_summaries);
    assert_eq!(stats.records_seen, e.top_level);
    assert_eq!(stats.out_of_order, 0);
    assert_eq!(stats.days_affected, 12);

    let w = sink.batches.iter().flat_map(|b| &b.workouts).next().expect("a workout");
    assert_eq!(w.sport, shared::model::Sport::Running);
    assert!(w.distance_m.is_some_and(|d| d >= 5000.0) && w.energy_kcal.is_some() && w.max_heart_rate == Some(178.0));
    let s = sink.batches.iter().flat_map(|b| &b.sleep).find(|s| s.deep_min.is_some()).expect("a staged session");
    assert_eq!((s.deep_min, s.rem_min, s.awake_min), (Some(85.0), Some(60.0), Some(5.0)));
}

#[test]
fn the_zip_with_a_localized_xml_name_imports_like_the_bare_xml() {
    let (xml, _) = generated(6);
    let mut zip = Cursor::new(Vec::new());
    write_zip(Spec::new(7, 6, 0), "Exportieren.xml", &mut zip).expect("zips");
    let (from_zip, zip_stats) = import(zip.get_ref(), Options::default()).expect("imports the zip");
    let (from_xml, xml_stats) = import(&xml, Options::default()).expect("imports the xml");
    assert_eq!(from_zip.items(), from_xml.items());
    assert_eq!(zip_stats, xml_stats);
}

#[test]
fn a_resumed_import_ends_with_exactly_the_items_of_an_uninterrupted_one() {
    let (xml, _) = generated(9);
    let mut zip = Cursor::new(Vec::new());
    write_zip(Spec::new(7, 9, 0), "export.xml", &mut zip).expect("zips");
    for input in [&xml[..], zip.get_ref()] {
        let (whole, whole_stats) = import(input, Options::default()).expect("imports");
        for every in [1u64, 37, 500] {
            let importer = Importer::new(Options::default());
            let mut sink = Collect::default();
            let mut checkpoint: Option<Checkpoint> = None;
            let mut runs = 0;
            let stats = loop {
                runs += 1;
                let mut n = 0;
                // Each run goes through the checkpoint's JSON, as the function stores it.
                let resumed = checkpoint
                    .take()
                    .map(|c| serde_json::from_slice(&serde_json::to_vec(&c).expect("serializes")).expect("reads back"));
                match importer
                    .run(input, &mut sink, resumed, |_| {
                        n += 1;
                        n % every == 0
                    })
                    .expect("runs")
                {
                    Outcome::Paused(c) => checkpoint = Some(*c),
                    Outcome::Completed(stats) => break stats,
                }
            };
            assert!(runs as u64 > whole_stats.records_seen / every, "paused {runs} times");
            assert_eq!(sink.items(), whole.items(), "resuming every {every} elements");
            assert_eq!(stats, whole_stats);
        }
    }
}

#[test]
fn importing_the_same_export_again_writes_identical_items() {
    let (xml, _) = generated(4);
    let (a, _) = import(&xml, Options::default()).expect("imports");
    let (b, _) = import(&xml, Options::default()).expect("imports again");
    assert_eq!(a.items(), b.items());
    let ids: Vec<&str> = a.batches.iter().flat_map(|b| &b.sleep).map(|s| s.id.as_str()).collect();
    assert!(ids.iter().all(|id| id.len() == 24) && ids.windows(2).all(|w| w[0] != w[1]));
}

fn export(body: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HealthData locale=\"en_US\">\n{body}</HealthData>\n")
        .into_bytes()
}

const WATCH: &str = "sourceName=\"Watch\" device=\"&lt;&lt;HKDevice: 0x1&gt;, name:Apple Watch, model:Watch&gt;\"";

#[test]
fn records_inside_a_correlation_are_not_counted_twice() {
    let rec = format!(
        "<Record type=\"HKQuantityTypeIdentifierStepCount\" {WATCH} unit=\"count\" startDate=\"2024-03-01 10:00:00 -0500\" endDate=\"2024-03-01 10:10:00 -0500\" value=\"500\"/>\n"
    );
    let xml = export(&format!(
        "<Correlation type=\"HKCorrelationTypeIdentifierFood\" sourceName=\"Watch\" startDate=\"2024-03-01 10:00:00 -0500\" endDate=\"2024-03-01 10:10:00 -0500\">\n{rec}</Correlation>\n{rec}"
    ));
    let (sink, stats) = import(&xml, Options::default()).expect("imports");
    assert_eq!(sink.daily()[&time::macros::date!(2024 - 03 - 01)][&Metric::Steps], 500.0);
    assert_eq!((stats.correlations, stats.records_imported), (1, 1));
}

#[test]
fn a_sample_counts_for_its_local_day_with_its_offset() {
    let xml = export(&format!(
        "<Record type=\"HKQuantityTypeIdentifierStepCount\" {WATCH} unit=\"count\" startDate=\"2024-03-01 23:30:00 -0800\" endDate=\"2024-03-01 23:40:00 -0800\" value=\"40\"/>\n\
         <Record type=\"HKQuantityTypeIdentifierOxygenSaturation\" {WATCH} unit=\"%\" startDate=\"2024-03-01 23:35:00 -0800\" endDate=\"2024-03-01 23:35:00 -0800\" value=\"0.96\"/>\n\
         <Record type=\"HKQuantityTypeIdentifierHeartRate\" {WATCH} unit=\"count/min\" startDate=\"2024-03-01 23:35:00 -0800\" endDate=\"2024-03-01 23:35:00 -0800\" value=\"61\"/>\n"
    ));
    let (sink, _) = import(&xml, Options::default()).expect("imports");
    let d = sink.batches.iter().flat_map(|b| &b.daily).find(|d| d.metrics.contains_key(&Metric::Steps)).expect("steps");
    assert_eq!(d.day, time::macros::date!(2024 - 03 - 01), "the UTC date is already March 2nd");
    assert_eq!(d.utc_offset, Some(time::macros::offset!(-08:00)));
    assert_eq!(sink.daily()[&d.day][&Metric::Spo2Pct], 96.0);
    let hr = sink.batches.iter().flat_map(|b| &b.samples).next().expect("a sample");
    assert_eq!(hr.time, time::macros::datetime!(2024-03-02 07:35:00 UTC));
    assert_eq!(hr.source.device.as_deref(), Some("Apple Watch"));
}

#[test]
fn the_healthkit_to_sqlite_fixture_of_real_records_parses() {
    let xml = include_bytes!("fixtures/healthkit-to-sqlite-export.xml");
    let (sink, stats) = import(xml, Options::default()).expect("imports");
    assert_eq!(stats.records_seen, 8);
    let w = sink.batches.iter().flat_map(|b| &b.workouts).next().expect("the workout");
    assert_eq!(
        (w.sport, w.start, w.day),
        (
            shared::model::Sport::Running,
            time::macros::datetime!(2016-11-14 14:25:41 UTC),
            time::macros::date!(2016 - 11 - 14)
        )
    );
    assert!(w.distance_m.is_some_and(|d| (d - 800.13).abs() < 0.01), "{:?}", w.distance_m);
    let hr = sink.batches.iter().flat_map(|b| &b.samples).next().expect("the heart rate");
    assert_eq!((hr.value, hr.kind), (72.0, SampleKind::HeartRate));
    let daily = sink.daily();
    assert_eq!(daily[&time::macros::date!(2016 - 11 - 15)][&Metric::ActiveEnergyKcal], 590.252);
    assert_eq!(daily[&time::macros::date!(2016 - 11 - 16)][&Metric::ActiveEnergyKcal], 323.513);
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        z.start_file(*name, opts).expect("starts");
        z.write_all(data).expect("writes");
    }
    z.finish().expect("finishes").into_inner()
}

#[test]
fn a_zip_bomb_is_refused_by_ratio_and_by_size() {
    let zeros = vec![b' '; 16 << 20];
    let bomb = zip_of(&[("apple_health_export/export.xml", &zeros)]);
    let err = import(&bomb, Options::default()).err().expect("refused");
    assert!(matches!(err, ImportError::ZipBomb(_)), "{err}");
    assert!(err.to_string().contains("100:1"), "{err}");

    let (xml, _) = generated(2);
    let fine = zip_of(&[("apple_health_export/export.xml", &xml)]);
    let small = Options { limits: Limits { max_entry_bytes: 10_000, max_ratio: 100 }, ..Options::default() };
    let err = import(&fine, small).err().expect("refused");
    assert!(matches!(err, ImportError::ZipBomb(_)) && err.code() == "zip_bomb", "{err}");
}

#[test]
fn files_that_are_not_exports_are_refused_with_a_clear_error() {
    for (what, input) in [
        ("html", b"<!DOCTYPE html>\n<html><body>hi</body></html>".to_vec()),
        ("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("empty", Vec::new()),
        ("zip without an export", zip_of(&[("photos/cat.jpg", b"\xff\xd8\xff")])),
    ] {
        let err = import(&input, Options::default()).err().expect("refused");
        assert!(matches!(err, ImportError::NotAnExport(_)), "{what}: {err}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn a_truncated_zip_or_xml_is_refused_as_cut_short() {
    let (xml, _) = generated(3);
    let zip = zip_of(&[("apple_health_export/export.xml", &xml)]);
    for (what, cut) in
        [("zip", &zip[..zip.len() / 2]), ("xml", &xml[..xml.len() / 2]), ("xml tail", &xml[..xml.len() - 8])]
    {
        let err = import(cut, Options::default()).err().expect("refused");
        assert!(matches!(err, ImportError::Truncated(_)), "{what}: {err}");
        assert_eq!(err.code(), "truncated");
    }
}

#[test]
fn malformed_xml_is_reported_with_its_line() {
    let xml = export("<ExportDate value=\"2024-01-01 00:00:00 -0500\"/>\n<!bogus>\n");
    let err = import(&xml, Options::default()).err().expect("refused");
    assert_eq!(err.line(), Some(4), "{err}");
    assert!(err.to_string().contains("line 4"));
}

#[test]
fn a_checkpoint_made_with_another_source_order_is_refused() {
    let (xml, _) = generated(2);
    let mut sink = Collect::default();
    let Ok(Outcome::Paused(c)) = Importer::new(Options::default()).run(&xml[..], &mut sink, None, |_| true) else {
        panic!("pauses")
    };
    let other = Options { order: health_import::SourceOrder(vec!["iphone".into()]), ..Options::default() };
    let err = Importer::new(other).run(&xml[..], &mut sink, Some(*c), |_| false).expect_err("refused");
    assert_eq!(err.code(), "bad_checkpoint");
}

#[test]
fn a_2015_export_with_spaces_in_attribute_names_imports() {
    let xml = export(
        "<Record type=\"HKQuantityTypeIdentifierStepCount\" source Name=\"Phone\" unit=\"count\" start Date=\"2015-06-01 10:00:00 +0200\" end Date=\"2015-06-01 10:10:00 +0200\" value=\"321\"/>\n<UnknownThing a=\"b\"><Child/></UnknownThing>\n",
    );
    let (sink, stats) = import(&xml, Options::default()).expect("imports");
    assert_eq!(sink.daily()[&time::macros::date!(2015 - 06 - 01)][&Metric::Steps], 321.0);
    assert_eq!((stats.records_seen, stats.unmapped), (2, 1));
}

#[test]
fn a_zip_streamed_with_data_descriptors_imports_like_the_bare_xml() {
    use std::io::Write;
    let (xml, _) = generated(3);
    // A non-seekable writer: sizes and CRC follow each entry's data (as streaming zippers write them).
    let mut z = zip::ZipWriter::new_stream(Vec::new());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("apple_health_export/export_cda.xml", opts).expect("starts");
    z.write_all(b"<ClinicalDocument/><ClinicalDocument/>").expect("writes");
    z.start_file("apple_health_export/export.xml", opts).expect("starts");
    z.write_all(&xml).expect("writes");
    let zip = z.finish().expect("finishes").into_inner();
    let (a, _) = import(&zip, Options::default()).expect("imports the streamed zip");
    let (b, _) = import(&xml, Options::default()).expect("imports the xml");
    assert_eq!(a.items(), b.items());
}

#[test]
fn a_sample_arriving_after_its_day_was_closed_is_reported_and_does_not_change_the_day() {
    let step = |day: &str, v: u32| {
        format!(
            "<Record type=\"HKQuantityTypeIdentifierStepCount\" {WATCH} unit=\"count\" startDate=\"{day} 10:00:00 -0500\" endDate=\"{day} 10:10:00 -0500\" value=\"{v}\"/>\n"
        )
    };
    let xml = export(&[step("2024-03-01", 100), step("2024-03-04", 400), step("2024-03-01", 50)].concat());
    let (sink, stats) = import(&xml, Options::default()).expect("imports");
    assert_eq!(stats.out_of_order, 1);
    assert_eq!(sink.daily()[&time::macros::date!(2024 - 03 - 01)][&Metric::Steps], 100.0);
    let wider = Options { reorder_days: 5, ..Options::default() };
    let (sink, stats) = import(&xml, wider).expect("imports");
    assert_eq!((stats.out_of_order, sink.daily()[&time::macros::date!(2024 - 03 - 01)][&Metric::Steps]), (0, 150.0));
}
