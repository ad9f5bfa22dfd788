//! Where a report goes: a file opened before tracing starts (so an unwritable path fails
//! early), or stdout / stderr.
use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    Report,
    options::{Format, RenderOptions},
    render,
};

#[derive(Debug, Error)]
// The cause is in the message, not a source: printed as a chain it would show twice.
#[error("cannot write the report to {path}: {cause}")]
pub struct OutputError {
    pub path: PathBuf,
    pub cause: io::Error,
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
            .map_err(|cause| OutputError { path: path.to_path_buf(), cause })
    }

    /// Like [`ReportSink::open`], refusing to send a binary format to a terminal.
    pub fn open_for(path: Option<&Path>, console: Console, format: Format) -> Result<Self, OutputError> {
        let terminal = match console {
            Console::Stdout => io::stdout().is_terminal(),
            Console::Stderr => io::stderr().is_terminal(),
        };
        if path.is_none() && format.is_binary() && terminal {
            return Err(OutputError {
                path: PathBuf::from(match console {
                    Console::Stdout => "stdout",
                    Console::Stderr => "stderr",
                }),
                cause: io::Error::other("it is a terminal and this format is binary: give -o FILE"),
            });
        }
        Self::open(path, console)
    }

    pub fn write(self, report: &Report, options: &RenderOptions) -> Result<(), OutputError> {
        let (path, mut out): (PathBuf, Box<dyn Write>) = match self {
            ReportSink::File(mut report_file) => {
                let file = report_file.file.take().expect("a report file is written once");
                (report_file.path.clone(), Box::new(BufWriter::new(file)))
            }
            ReportSink::Console(Console::Stdout) => ("stdout".into(), Box::new(io::stdout().lock())),
            ReportSink::Console(Console::Stderr) => ("stderr".into(), Box::new(io::stderr().lock())),
        };
        let written = render(report, options, &mut out);
        written.and_then(|()| out.flush()).map_err(|cause| OutputError { path, cause })
    }
}
