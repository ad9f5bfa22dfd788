//! Writes memtrace's man pages, generated from its clap definitions (`memtrace/src/cli.rs`):
//! `memtrace.1` and one page per subcommand (`memtrace-run.1`, ...).
//!
//! `cargo xtask man` runs it (`cargo run -p memtrace --example man -- OUTDIR`, OUTDIR
//! `target/man` there): xtask cannot depend on memtrace, whose build script needs bpf-linker,
//! so the generator lives here, beside the definitions it reads. `tests/docs.rs` includes this
//! file to run [`write_pages`] and check what it wrote.
use std::{
    io,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_mangen::Man;
use memtrace::cli::Cli;

/// The `memtrace` command as the pages show it: built (global options propagated to the
/// subcommands), without clap's `help` subcommand, which needs no page of its own.
pub fn command() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

/// Writes `memtrace.1` and a page for each subcommand into `dir`; returns their paths.
pub fn write_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let command = command();
    let mut written = vec![Man::new(command.clone()).generate_to(dir)?];
    for subcommand in command.get_subcommands().filter(|subcommand| !subcommand.is_hide_set()) {
        written.push(Man::new(subcommand.clone()).generate_to(dir)?);
    }
    Ok(written)
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run -p memtrace --example man -- OUTDIR");
        std::process::exit(2);
    };
    match write_pages(Path::new(&dir)) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
        }
        Err(error) => {
            eprintln!("man: cannot write the pages to {}: {error}", Path::new(&dir).display());
            std::process::exit(1);
        }
    }
}
