//! Where a report goes: a file prepared before tracing starts (so an unwritable path fails
//! early) and put in place only once the report is written (see `pending_file`: a failed run
//! leaves the previous report as it was), or stdout / stderr.
use std::{
    io::{self, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    Report,
    options::{Format, RenderOptions},
    pending_file::PendingFile,
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
    File(PathBuf, PendingFile),
    Console(Console),
}

impl ReportSink {
    /// Prepares to replace `path` (nothing there changes until the report is written), or falls
    /// back to `console`.
    pub fn open(path: Option<&Path>, console: Console) -> Result<Self, OutputError> {
        let Some(path) = path else { return Ok(ReportSink::Console(console)) };
        PendingFile::create(path)
            .map(|pending| ReportSink::File(path.to_path_buf(), pending))
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
        let (path, written) = match self {
            ReportSink::File(path, mut pending) => {
                let mut out = BufWriter::new(pending.file());
                let written = render(report, options, &mut out).and_then(|()| out.flush());
                drop(out);
                (path, written.and_then(|()| pending.commit()))
            }
            ReportSink::Console(console) => {
                let (path, mut out): (PathBuf, Box<dyn Write>) = match console {
                    Console::Stdout => ("stdout".into(), Box::new(io::stdout().lock())),
                    Console::Stderr => ("stderr".into(), Box::new(io::stderr().lock())),
                };
                let written = render(report, options, &mut out).and_then(|()| out.flush());
                (path, written)
            }
        };
        written.map_err(|cause| OutputError { path, cause })
    }
}
