//! Apple Health export importer: streams an `export.zip` or `export.xml` (any size, constant memory), maps it
//! to the normalized model (`shared::model`), merges iPhone and Watch samples by source priority over time
//! intervals, and hands batches to a [`Sink`]. Runs can pause and resume from a small [`Checkpoint`].
//! No AWS here: the function wires S3 and DynamoDB around [`Importer::run`].

pub mod error;
pub mod generate;
pub mod merge;
pub mod parse;
pub mod source;

pub use error::ImportError;
pub use source::Limits;
pub mod import;
pub use import::{Checkpoint, Importer, Options, Outcome, Progress, Sink, Stats};
pub use merge::SourceOrder;
