//! The `memtrace` binary: parse the command line, run the session, turn errors into one line
//! on stderr and an exit code.
use std::process::ExitCode;

use clap::Parser;
use memtrace::{
    cli::{Cli, Command, FaultsShorthand, SavedReportArgs},
    error_text,
    report::printable::printable,
    session,
    target::{launch::LaunchError, stop::Stopper},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Re-rendering a saved report needs no runtime, no privileges and no kernel.
    let cli = match cli.command {
        Command::Report(args) => return finish(render_saved(&args)),
        command => Cli { command, ..cli },
    };
    // `record --scan` stops its targets from a helper process forked now, while memtrace has
    // one thread and has loaded nothing into the kernel (see target::stop).
    let stopper = match &cli.command {
        Command::Record(args) if args.scan => match Stopper::spawn() {
            Ok(stopper) => Some(stopper),
            Err(error) => {
                eprintln!("memtrace: error: cannot start the process that stops targets for --scan: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memtrace: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => session::run(args.options()).await,
            Command::Record(args) => session::record(args.options(), stopper).await,
            Command::Faults(args) => match args.expand() {
                FaultsShorthand::Run(args) => session::run(args.options()).await,
                FaultsShorthand::Record(args) => session::record(args.options(), None).await,
            },
            Command::Serve(args) if args.trace.combined => {
                Err(anyhow::anyhow!("serve cannot use --combined: its kernel sums are read only when the probes go"))
            }
            Command::Serve(args) => session::serve(args.options()).await,
            Command::Report(args) => render_saved(&args),
        }
    });
    // Dropping the runtime first ends the kernel log task before we exit.
    drop(runtime);
    finish(result)
}

/// `memtrace report FILE`: needs no runtime, no privileges and no kernel.
fn render_saved(args: &SavedReportArgs) -> anyhow::Result<i32> {
    session::report_saved(&args.options())
}

fn finish(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            // Each cause once, and nothing a target named (a path) can drive the terminal with.
            eprintln!("memtrace: error: {}", printable(&error_text::one_line(&error)));
            ExitCode::from(exit_code_for(&error))
        }
    }
}

/// Shell conventions for a command that cannot be started: 127 not found, 126 not executable.
fn exit_code_for(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<LaunchError>() {
        Some(LaunchError::NotFound(_)) => 127,
        Some(LaunchError::NotExecutable(_)) | Some(LaunchError::Exec { .. }) => 126,
        _ => 1,
    }
}

/// memtrace's own messages at warn (info with -v); the kernel side's aya-log records only
/// with -v; everything at debug with -vv.
fn init_logging(verbose: u8) {
    let filter = match verbose {
        // inferno logs an error for an empty flamegraph, which svg.rs already says in its words.
        0 => "warn,memtrace_ebpf=off,inferno=off",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::new()
        .parse_filters(&std::env::var("MEMTRACE_LOG").unwrap_or_else(|_| filter.to_owned()))
        .format_timestamp(None)
        .init();
}
