//! `memtrace report FILE`: load a JSON report saved by `run` or `record` and render it again,
//! in any format. No privileges, no kernel, no running target: the JSON is the `Report` value.
//! The file may come from anyone: it is opened without blocking, taken only as a regular file,
//! and read up to [`MAX_REPORT_BYTES`].
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::Report;
use crate::untrusted::{self, UntrustedError};

/// The largest saved report read: a report of a million stacks of a dozen frames is a few
/// hundred megabytes.
pub const MAX_REPORT_BYTES: u64 = 1 << 30;

#[derive(Debug, Error)]
pub enum SavedReportError {
    // The causes are in the messages, not sources: the one line says it all.
    #[error("cannot read {}: {cause}", path.display())]
    Unreadable { path: PathBuf, cause: UntrustedError },
    #[error(
        "{} is not a memtrace JSON report ({cause}); save one with `memtrace run|record --format json -o FILE`",
        path.display()
    )]
    NotAReport { path: PathBuf, cause: serde_json::Error },
}

/// Reads and parses a saved JSON report.
pub fn load(path: &Path) -> Result<Report, SavedReportError> {
    let text = untrusted::read(path, untrusted::Links::Follow, MAX_REPORT_BYTES)
        .map_err(|cause| SavedReportError::Unreadable { path: path.to_path_buf(), cause })?;
    serde_json::from_slice(&text).map_err(|cause| SavedReportError::NotAReport { path: path.to_path_buf(), cause })
}
