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
    File(ReportFile),
    Console(Console),
}

/// A report file opened early. If memtrace fails before writing it, a file it created is
/// removed again rather than left empty.
pub struct ReportFile {
    path: PathBuf,
    file: Option<File>,
    created: bool,
}

impl Drop for ReportFile {
    fn drop(&mut self) {
        if self.file.is_some() && self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ReportSink {
    /// Opens (creates or truncates) `path` now, or falls back to `console`.
    pub fn open(path: Option<&Path>, console: Console) -> Result<Self, OutputError> {
        let Some(path) = path else { return Ok(ReportSink::Console(console)) };
        let created = !path.exists();
        File::create(path)
            .map(|file| ReportSink::File(ReportFile { path: path.to_path_buf(), file: Some(file), created }))
            .map_err(|source| OutputError { path: path.to_path_buf(), source })
    }

    pub fn write(self, report: &Report, format: Format, top: Option<usize>) -> Result<(), OutputError> {
        let (path, mut out): (PathBuf, Box<dyn Write>) = match self {
            ReportSink::File(mut report_file) => {
                let file = report_file.file.take().expect("a report file is written once");
                (report_file.path.clone(), Box::new(BufWriter::new(file)))
            }
            ReportSink::Console(Console::Stdout) => ("stdout".into(), Box::new(io::stdout().lock())),
            ReportSink::Console(Console::Stderr) => ("stderr".into(), Box::new(io::stderr().lock())),
        };
        let written = match format {
            Format::Text => report::render_text(report, top, &mut out),
            Format::Json => report::render_json(report, &mut out),
            Format::Junit => report::render_junit(report, &mut out),
        };
        written.and_then(|()| out.flush()).map_err(|source| OutputError { path, source })
    }
}
