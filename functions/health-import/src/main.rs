//! Placeholder entry: the function's Lambda handler (S3 event -> `health_import::Importer::run`) goes here.

fn main() {
    eprintln!("health-import: the Apple Health importer library; the Lambda entry is not wired yet.");
    eprintln!("Generate an export: cargo run -p health-import --example generate -- <out.xml|out.zip> <days> [MB]");
}
