//! The importer's benchmark, side by side in one run on the same generated export.xml and its zip:
//! - the import pipeline (inflate, filter, parse, normalize, merge, batch into a counting sink),
//! - a bare quick-xml scan of the XML (every event, no attributes read: the ceiling),
//! - healthkit-to-sqlite from PyPI (`.venv/bin/healthkit-to-sqlite`, the baseline users have today).
//!
//! Each runs in a child process, so its peak RSS (`VmHWM`) and CPU time (`/proc/self/stat`) are its own.
//! `cargo run --profile bench-build -p health-import --example bench -- [MB ...] [--baseline-mb N]`
//! (default sizes 50 and 500; the baseline runs at the first size at or above `--baseline-mb`, default 500,
//! and is skipped with `--baseline-mb 0`). Files live under a temporary folder in /tmp, deleted at the end.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use health_import::{Importer, Options, Outcome, Sink};
use shared::model::Batch;

struct Counting(u64);

impl Sink for Counting {
    fn write(&mut self, batch: Batch) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0 += (batch.daily.len() + batch.sleep.len() + batch.workouts.len() + batch.samples.len()) as u64;
        std::hint::black_box(&batch);
        Ok(())
    }
}

/// Peak resident set size of this process, in KB.
fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn child(mode: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let what = match mode {
        "import" => {
            let mut sink = Counting(0);
            let file = std::fs::File::open(path)?;
            match Importer::new(Options::default()).run(file, &mut sink, None, |_| false)? {
                Outcome::Completed(s) => format!("{} elements, {} items", s.records_seen, sink.0),
                Outcome::Paused(_) => "paused".to_owned(),
            }
        }
        "resume" => {
            // Pauses every 50k elements and resumes from the checkpoint's JSON, as the function would.
            let importer = Importer::new(Options::default());
            let (mut sink, mut checkpoint, mut runs, mut largest) = (Counting(0), None, 0, 0usize);
            loop {
                runs += 1;
                let mut n = 0u64;
                let file = std::fs::File::open(path)?;
                match importer.run(file, &mut sink, checkpoint.take(), |_| {
                    n += 1;
                    n.is_multiple_of(50_000)
                })? {
                    Outcome::Paused(c) => {
                        let json = serde_json::to_vec(&c)?;
                        largest = largest.max(json.len());
                        checkpoint = Some(serde_json::from_slice(&json)?);
                    }
                    Outcome::Completed(s) => {
                        break format!(
                            "{} elements, {} items, {runs} runs, largest checkpoint {largest} B",
                            s.records_seen, sink.0
                        );
                    }
                }
            }
        }
        "scan" => {
            // quick-xml itself stops at the iOS 16 DTD (`UnclosedDoctype`): the scan starts at the root element.
            let mut file = std::fs::File::open(path)?;
            let mut head = vec![0u8; 1 << 20];
            let n = file.read(&mut head)?;
            let root = head[..n].windows(11).position(|w| w == b"<HealthData").ok_or("no <HealthData>")?;
            file.seek(SeekFrom::Start(root as u64))?;
            let file = BufReader::with_capacity(256 << 10, file);
            let mut reader = quick_xml::Reader::from_reader(file);
            let mut buf = Vec::with_capacity(4096);
            let mut events = 0u64;
            loop {
                buf.clear();
                match reader.read_event_into(&mut buf)? {
                    quick_xml::events::Event::Eof => break,
                    e => {
                        std::hint::black_box(&e);
                        events += 1;
                    }
                }
            }
            format!("{events} events")
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    println!("{} {} {} {what}", started.elapsed().as_secs_f64(), cpu_secs(), vm_hwm_kb());
    Ok(())
}

struct Run {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
    note: String,
}

fn run_child(mode: &str, path: &Path) -> Result<Run, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?).arg("--child").arg(mode).arg(path).output()?;
    if !out.status.success() {
        return Err(format!("{mode} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut parts = line.splitn(4, ' ');
    let mut num = || parts.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let (wall, cpu, rss_kb) = (num(), num(), num());
    Ok(Run { wall, cpu, rss_mb: rss_kb / 1024.0, note: parts.next().unwrap_or_default().to_owned() })
}

/// healthkit-to-sqlite under `/usr/bin/time -v`: wall, user + system CPU and max RSS from its report.
fn run_baseline(zip: &Path, dir: &Path) -> Result<Run, Box<dyn std::error::Error>> {
    let bin = ["../../.venv/bin/healthkit-to-sqlite", ".venv/bin/healthkit-to-sqlite"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("healthkit-to-sqlite is not installed in .venv (./dev installs infra/requirements.txt)")?;
    let db = dir.join("baseline.db");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time").arg("-v").arg(&bin).arg("-s").arg(zip).arg(&db).output()?;
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&db);
    let report = String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = field("User time (seconds):") + field("System time (seconds):");
    let note = if out.status.success() {
        "into SQLite".to_owned()
    } else {
        format!("FAILED: {}", report.lines().rev().find(|l| l.contains("Error")).unwrap_or(""))
    };
    Ok(Run { wall, cpu, rss_mb: field("Maximum resident set size (kbytes):") / 1024.0, note })
}

fn row(name: &str, mb: f64, r: &Run) {
    println!(
        "| {name:<34} | {:>8.1} | {:>8.2} | {:>8.2} | {:>8.1} | {:>7.1} | {} |",
        mb,
        r.wall,
        r.cpu,
        mb / r.wall.max(1e-9),
        r.rss_mb,
        r.note
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(mode), Some(path)) = (args.get(1), args.get(2)) else { return Err("--child <mode> <path>".into()) };
        return child(mode, Path::new(path));
    }
    let mut sizes: Vec<u64> = Vec::new();
    let mut baseline_mb = 500u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--baseline-mb" {
            baseline_mb = it.next().and_then(|v| v.parse().ok()).unwrap_or(baseline_mb);
        } else {
            sizes.push(a.parse()?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![50, 500];
    }
    let dir = std::env::temp_dir().join(format!("health-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&sizes, baseline_mb, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(sizes: &[u64], baseline_mb: u64, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "| {:<34} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} | notes |",
        "what", "XML MB", "wall s", "CPU s", "MB/s", "RSS MB"
    );
    println!("|{:-<36}|{:->10}|{:->10}|{:->10}|{:->10}|{:->9}|-------|", "", "", "", "", "", "");
    let mut baseline_done = baseline_mb == 0;
    for &size in sizes {
        let days = (size / 2).clamp(30, 1500) as u32;
        let spec = health_import::generate::Spec::new(42, days, size << 20);
        let xml = dir.join("export.xml");
        let zip = dir.join("export.zip");
        let e = health_import::generate::write_xml(spec, std::fs::File::create(&xml)?)?;
        health_import::generate::write_zip(spec, "export.xml", std::fs::File::create(&zip)?)?;
        let mb = e.xml_bytes as f64 / (1 << 20) as f64;
        let zip_mb = std::fs::metadata(&zip)?.len() as f64 / (1 << 20) as f64;
        let scan = run_child("scan", &xml)?;
        let imp = run_child("import", &xml)?;
        let imp_zip = run_child("import", &zip)?;
        let resumed = run_child("resume", &zip)?;
        row("bare quick-xml scan (ceiling)", mb, &scan);
        row("import export.xml", mb, &imp);
        row(&format!("import export.zip ({zip_mb:.0} MB)"), mb, &imp_zip);
        row("import export.zip, paused every 50k", mb, &resumed);
        println!(
            "|   import speed vs the scan: xml {:.0}%, zip {:.0}% (target >= 40%); peak RSS <= 64 MB: {}",
            100.0 * scan.wall / imp.wall.max(1e-9),
            100.0 * scan.wall / imp_zip.wall.max(1e-9),
            if imp.rss_mb.max(imp_zip.rss_mb) <= 64.0 { "yes" } else { "NO" }
        );
        if !baseline_done && size >= baseline_mb {
            baseline_done = true;
            // The same export without the iOS 16 DTD and \x0b: ElementTree stops at either.
            let clean = dir.join("clean.zip");
            let spec = health_import::generate::Spec { quirks: false, ..spec };
            health_import::generate::write_zip(spec, "export.xml", std::fs::File::create(&clean)?)?;
            let base = run_baseline(&clean, dir)?;
            let _ = std::fs::remove_file(&clean);
            row("healthkit-to-sqlite export.zip (no DTD)", mb, &base);
            println!(
                "|   CPU time: healthkit-to-sqlite / import of the zip = {:.1}x (target >= 30x)",
                base.cpu / imp_zip.cpu.max(1e-9)
            );
        }
        let _ = std::fs::remove_file(&xml);
        let _ = std::fs::remove_file(&zip);
    }
    Ok(())
}
