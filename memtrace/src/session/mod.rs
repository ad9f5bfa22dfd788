//! `run`, `record` and `serve`: orchestration only. Each loads a `Trace` (the probes, the events they
//! send, what the agent made of them), drives it through the target's life or the recording
//! window, and writes its report.
mod options;
mod record;
mod run;
mod saved;
mod selector;
mod serve;
mod status_line;
mod trace;
mod trace_only;

pub use options::{RecordOptions, ReportOptions, RunOptions, SavedReportOptions, ServeOptions, TraceOptions};
pub use record::{EXIT_TARGET_GONE, record};
pub use run::run;
pub use saved::report_saved;
pub use serve::serve;

/// CLOCK_MONOTONIC in nanoseconds, the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    u64::try_from(now.tv_sec())
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0))
}

/// An error for a warning line: each cause once, nothing a target chose (a path) unescaped.
fn warning_text(error: &anyhow::Error) -> String {
    crate::report::printable::printable(&crate::error_text::one_line(error)).into_owned()
}
