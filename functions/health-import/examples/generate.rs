//! Writes a generated Apple Health export: `cargo run -p health-import --example generate -- <out.xml|out.zip>
//! <days> [size MB] [seed]`. Streams to the file, so any size works; prints what an import must find.

use std::fs::File;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, days, rest @ ..] = args.as_slice() else {
        eprintln!("usage: generate <out.xml|out.zip> <days> [size MB] [seed]");
        std::process::exit(2);
    };
    let mb: u64 = rest.first().map_or(Ok(0), |m| m.parse())?;
    let seed: u64 = rest.get(1).map_or(Ok(7), |s| s.parse())?;
    let spec = health_import::generate::Spec::new(seed, days.parse()?, mb << 20);
    let file = File::create(out)?;
    let e = if out.ends_with(".zip") {
        health_import::generate::write_zip(spec, "export.xml", file)?
    } else {
        health_import::generate::write_xml(spec, file)?
    };
    println!(
        "{out}: {} bytes of XML, {} top-level elements, {} heart rate samples, {} workouts, steps merged {:.0} vs naive {:.0}",
        e.xml_bytes,
        e.top_level,
        e.heart_rate_samples,
        e.workouts,
        e.steps.values().sum::<f64>(),
        e.naive_steps.values().sum::<f64>()
    );
    Ok(())
}
