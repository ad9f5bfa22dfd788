//! The CI options of one session, checked before tracing starts (suppressions files read, the
//! `--print-suppressions` file prepared), and applied to the finished report.
use std::{io::Write, path::PathBuf};

use anyhow::{Context, Result};

use super::{DEFAULT_FAIL_ON, EXIT_LEAKS_FOUND, Suppressions, decide, describe, fails, suppress, suppressions};
use crate::report::{
    LeakKind, Report,
    options::{Format, RenderOptions},
    pending_file::PendingFile,
};

/// What the command line asked of the check (see `memtrace run --help`).
#[derive(Debug, Default, Clone)]
pub struct CheckOptions {
    /// Decide the check and fail the run on leaks.
    pub check: bool,
    /// Bytes of failing leaks tolerated.
    pub leak_threshold: u64,
    /// The kinds that fail; `None`: [`DEFAULT_FAIL_ON`].
    pub fail_on: Option<Vec<LeakKind>>,
    /// memtrace's exit code on failure; `None`: [`EXIT_LEAKS_FOUND`].
    pub exit_code: Option<u8>,
    /// Suppressions files to read.
    pub suppressions: Vec<PathBuf>,
    /// Apply the built-in suppressions too.
    pub builtin_suppressions: bool,
    /// Where to write suppressions for the failing leaks (`-` for stdout).
    pub print_suppressions: Option<PathBuf>,
}

pub struct CiSettings {
    check: bool,
    /// The check is decided for `--format junit` even without `--check`.
    decide: bool,
    fail_on: Vec<LeakKind>,
    leak_threshold: u64,
    exit_code: i32,
    suppressions: Suppressions,
    print_to: Option<(PathBuf, Option<PendingFile>)>,
}

impl CiSettings {
    pub fn new(args: &CheckOptions, format: Format) -> Result<Self> {
        let mut all = if args.builtin_suppressions { Suppressions::builtin() } else { Suppressions::default() };
        for path in &args.suppressions {
            all.extend(Suppressions::read(path)?);
        }
        let print_to = match &args.print_suppressions {
            None => None,
            Some(path) if path.as_os_str() == "-" => Some((path.clone(), None)),
            Some(path) => {
                // Replaced only once written: a failed run leaves the old file as it was.
                let file = PendingFile::create(path)
                    .with_context(|| format!("cannot write the suppressions file {}", path.display()))?;
                Some((path.clone(), Some(file)))
            }
        };
        Ok(Self {
            check: args.check,
            decide: args.check || format == Format::Junit,
            fail_on: args.fail_on.clone().unwrap_or_else(|| DEFAULT_FAIL_ON.to_vec()),
            leak_threshold: args.leak_threshold,
            exit_code: args.exit_code.map_or(EXIT_LEAKS_FOUND, i32::from),
            suppressions: all,
            print_to,
        })
    }

    /// Whether every stack must be kept until [`CiSettings::apply`] (the check and printed
    /// suppressions look at all of them, not only the `--top` ones; `--kinds` leaves some out
    /// before `--top` picks).
    pub fn needs_all_stacks(&self, render: &RenderOptions) -> bool {
        self.decide || self.print_to.is_some() || render.filters_kinds()
    }

    /// Marks suppressed stacks, decides the check, writes the suppressions file, then keeps
    /// only the `--top` stacks (unless `--kinds` leaves some out first: rendering picks them).
    pub fn apply(&mut self, report: &mut Report, render: &RenderOptions) -> Result<()> {
        let top = render.top.filter(|_| !render.filters_kinds());
        suppress(report, &self.suppressions);
        if self.decide {
            report.check = Some(decide(report, &self.fail_on, self.leak_threshold));
        }
        if let Some((path, file)) = self.print_to.take() {
            let failing: Vec<_> = report.stacks.iter().filter(|stack| fails(stack, &self.fail_on)).collect();
            let text = suppressions::print(&failing);
            let written = match file {
                Some(mut file) => file.file().write_all(text.as_bytes()).and_then(|()| file.commit()),
                None => std::io::stdout().write_all(text.as_bytes()),
            };
            written.with_context(|| format!("cannot write the suppressions file {}", path.display()))?;
        }
        if let Some(top) = top {
            report.stacks.truncate(top);
        }
        Ok(())
    }

    /// memtrace's exit code: the target's own failure first, then the check's.
    pub fn exit_code(&self, target_code: i32, report: &Report) -> i32 {
        let Some(check) = report.check.as_ref().filter(|_| self.check) else { return target_code };
        eprintln!("{}", describe(check, report));
        if target_code != 0 {
            eprintln!("memtrace: the target itself failed (exit status {target_code}); memtrace exits with its status");
            return target_code;
        }
        if check.passed { 0 } else { self.exit_code }
    }
}
