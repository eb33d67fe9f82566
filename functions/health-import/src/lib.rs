//! Apple Health export importer: streams an `export.zip` or `export.xml` (any size, constant memory), maps it
//! to the normalized model (`shared::model`), merges iPhone and Watch samples by source priority over time
//! intervals, and hands batches to a [`Sink`]. Runs can pause and resume from a small [`Checkpoint`].
//! No AWS here: the function wires S3 and DynamoDB around [`Importer::run`].
//!
//! ```no_run
//! use health_import::{Importer, Options, Outcome, Sink};
//! # struct Store;
//! # impl Sink for Store {
//! #     fn write(&mut self, _: shared::model::Batch) -> Result<(), Box<dyn std::error::Error + Send + Sync>> { Ok(()) }
//! # }
//! # fn upload() -> std::fs::File { unimplemented!() }
//! # fn saved_checkpoint() -> Option<health_import::Checkpoint> { None }
//! let deadline = std::time::Instant::now() + std::time::Duration::from_secs(840);
//! let importer = Importer::new(Options::default());
//! // `upload()`: a blocking reader over the S3 object from its first byte (e.g. ranged GETs, or the async
//! // body through `tokio_util::io::SyncIoBridge` inside `spawn_blocking`).
//! match importer.run(upload(), &mut Store, saved_checkpoint(), |_progress| std::time::Instant::now() > deadline) {
//!     Ok(Outcome::Completed(stats)) => println!("{} records imported", stats.records_imported),
//!     Ok(Outcome::Paused(checkpoint)) => { /* store `serde_json::to_vec(&checkpoint)`, invoke again */ }
//!     Err(e) if e.is_retryable() => { /* retry from the last checkpoint */ }
//!     Err(e) => println!("import failed: {} ({}, line {:?})", e, e.code(), e.line()),
//! }
//! ```

pub mod error;
pub mod generate;
pub mod handler;
pub mod import;
pub mod merge;
pub mod parse;
pub mod source;

pub use error::ImportError;
pub use import::{Checkpoint, Importer, Options, Outcome, Progress, Sink, Stats};
pub use merge::SourceOrder;
pub use source::Limits;
