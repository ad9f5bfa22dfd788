//! A process's command line and environment, from `/proc` (through procfs, which opens them
//! relative to the process's own directory). Empty when the process is gone or the file
//! unreadable: they only describe it.
use std::{ffi::OsString, io::Read};

use procfs::process::Process;

/// The command line of `pid`, as the report shows it (bytes that are not UTF-8 replaced).
pub fn command_line(pid: u32) -> Vec<String> {
    let mut bytes = Vec::new();
    let read = Process::new(pid as i32).and_then(|process| process.open_relative("cmdline"));
    if read.map(|mut file| file.read_to_end(&mut bytes)).is_err() {
        return Vec::new();
    }
    bytes
        .split(|&byte| byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The environment of `pid`, for finding the libraries it will load.
pub fn environment_of(pid: u32) -> Vec<(OsString, OsString)> {
    Process::new(pid as i32)
        .and_then(|process| process.environ())
        .map(|environ| environ.into_iter().collect())
        .unwrap_or_default()
}
