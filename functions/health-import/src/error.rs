//! Why an import stopped: refusals of the upload (clear messages for the import's `error`) and retryable
//! infrastructure failures, kept apart so the caller knows whether to try again.

use std::error::Error as StdError;

/// Everything that can end an import early. `code()` is the import's `error.code`, `line()` its `error.line`.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the zip archive expands too much ({0}); this is not a Health export (those compress about 15:1)")]
    ZipBomb(String),
    #[error("this is not an Apple Health export: {0}")]
    NotAnExport(String),
    #[error("the upload is cut short ({0}); upload the whole export.zip again")]
    Truncated(String),
    #[error("the export's XML is malformed at line {line}: {message}")]
    Xml { line: u64, message: String },
    #[error("the zip archive is unreadable: {0}")]
    Zip(String),
    #[error("the checkpoint does not fit this export: {0}")]
    Checkpoint(String),
    /// Reading the upload failed (network, S3): retry from the last checkpoint.
    #[error("reading the upload failed: {0}")]
    Read(#[source] std::io::Error),
    /// The sink could not store a batch: retry from the last checkpoint.
    #[error("storing imported data failed: {0}")]
    Sink(#[source] Box<dyn StdError + Send + Sync>),
}

impl ImportError {
    /// A stable code for the import's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ZipBomb(_) => "zip_bomb",
            Self::NotAnExport(_) => "not_an_export",
            Self::Truncated(_) => "truncated",
            Self::Xml { .. } => "malformed_xml",
            Self::Zip(_) => "bad_zip",
            Self::Checkpoint(_) => "bad_checkpoint",
            Self::Read(_) => "read_failed",
            Self::Sink(_) => "store_failed",
        }
    }

    /// The line of the XML an error was found on, when it is about the XML.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Xml { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// Whether running again (from the last checkpoint) may succeed; refusals of the file never do.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Read(_) | Self::Sink(_))
    }
}

/// The refusal a guard inside the byte stream raises; it travels through `io::Error` (the zip and XML
/// readers only speak io) and is turned back into an [`ImportError`] by [`from_io`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ZipBombTripped(pub String);

/// Classifies an io error met while reading the input.
pub(crate) fn from_io(e: std::io::Error) -> ImportError {
    if let Some(b) = e.get_ref().and_then(|r| r.downcast_ref::<ZipBombTripped>()) {
        return ImportError::ZipBomb(b.0.clone());
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            ImportError::Truncated("the data ends in the middle of the archive".into())
        }
        std::io::ErrorKind::InvalidData => ImportError::Zip(e.to_string()),
        _ => ImportError::Read(e),
    }
}
