//! `memtrace report FILE`: a saved JSON report rendered again and, with `--check`, checked
//! again (other suppressions, kinds or threshold), exiting as `run --check` would have. No
//! privileges, no kernel, no running target.
use anyhow::{Result, bail};

use super::SavedReportOptions;
use crate::{
    analyze::check::CiSettings,
    report::{
        Mode, Report, saved,
        sink::{Console, ReportSink},
    },
};

/// Renders (and checks) the saved report; returns memtrace's exit code.
pub fn report_saved(options: &SavedReportOptions) -> Result<i32> {
    let mut report = saved::load(&options.file)?;
    let render = &options.report.render;
    let sink = ReportSink::open_for(options.report.output.as_deref(), Console::Stdout, render.format)?;
    if options.check.check && report.summary.leaks.is_none() {
        bail!(
            "{} has no leak kinds (its processes were not scanned: record without --scan, or run --no-leak-kinds): --check cannot decide",
            options.file.display()
        );
    }
    let check = &options.check;
    let mut ci = CiSettings::new(check, render.format)?;
    // Without CI options the saved report is rendered as it was (its suppressions and check).
    if check.check
        || !check.suppressions.is_empty()
        || !check.builtin_suppressions
        || check.print_suppressions.is_some()
    {
        ci.apply(&mut report, render)?;
    }
    sink.write(&report, render)?;
    Ok(if check.check { ci.exit_code(saved_target_code(&report), &report) } else { 0 })
}

/// The exit code the saved run's command had, as `run` passes it on (128 + N for a signal);
/// 0 for a recording or a served snapshot, whose processes went on.
fn saved_target_code(report: &Report) -> i32 {
    match (report.mode, report.target.exit_code, report.target.signal) {
        (Mode::Record | Mode::Serve, _, _) => 0,
        (Mode::Run, Some(code), _) => code,
        (Mode::Run, None, Some(signal)) => 128_i32.saturating_add(signal),
        (Mode::Run, None, None) => 0,
    }
}
