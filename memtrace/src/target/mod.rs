//! The traced processes: starting a command under memtrace (`launch`), reading their `/proc`
//! files (`maps`), stopping a running one for a scan (`stop`), and the checks made before the
//! kernel is touched (`preflight`).
pub mod launch;
pub mod maps;
pub mod preflight;
pub mod proc;
pub mod ptrace;
pub mod stop;
