//! Where a report goes: a file opened before tracing starts (so an unwritable path fails
//! early), or stdout / stderr.
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{
    cli::Format,
    report::{self, Report},
};

#[derive(Debug, Error)]
#[error("cannot write the report to {path}: {source}")]
pub struct OutputError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The stream a report is written to when no `-o FILE` is given.
#[derive(Debug, Clone, Copy)]
pub enum Console {
    Stdout,
    Stderr,
}

pub enum ReportSink {
    File { path: PathBuf, file: File },
    Console(Console),
}

impl ReportSink {
    /// Opens (creates or truncates) `path` now, or falls back to `console`.
    pub fn open(path: Option<&Path>, console: Console) -> Result<Self, OutputError> {
        match path {
            Some(path) => File::create(path)
                .map(|file| ReportSink::File { path: path.to_path_buf(), file })
                .map_err(|source| OutputError { path: path.to_path_buf(), source }),
            None => Ok(ReportSink::Console(console)),
        }
    }

    pub fn write(self, report: &Report, format: Format, top: Option<usize>) -> Result<(), OutputError> {
        let (path, mut out): (PathBuf, Box<dyn Write>) = match self {
            ReportSink::File { path, file } => (path, Box::new(BufWriter::new(file))),
            ReportSink::Console(Console::Stdout) => ("stdout".into(), Box::new(io::stdout().lock())),
            ReportSink::Console(Console::Stderr) => ("stderr".into(), Box::new(io::stderr().lock())),
        };
        let written = match format {
            Format::Text => report::render_text(report, top, &mut out),
            Format::Json => report::render_json(report, &mut out),
        };
        written.and_then(|()| out.flush()).map_err(|source| OutputError { path, source })
    }
}
