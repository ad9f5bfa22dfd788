//! The reference documentation generated from the code: the man pages from the clap
//! definitions (examples/man.rs). Needs no root.
#[allow(dead_code)]
#[path = "../examples/man.rs"]
mod man;

use std::{collections::BTreeSet, path::Path, process::Command};

/// The page as a reader sees it: rendered by groff to plain ASCII (no overstrike bold or
/// underline), without hyphenation, so that no option is broken across two lines.
fn rendered(page: &Path) -> String {
    let output = Command::new("groff")
        .args(["-man", "-Tascii", "-P-c", "-P-b", "-P-u", "-rHY=0"])
        .arg(page)
        .output()
        .expect("groff runs (cargo xtask setup installs groff-base)");
    assert!(output.status.success(), "groff failed on {}: {}", page.display(), String::from_utf8_lossy(&output.stderr));
    // What overstriking is left (the bullets, `+` struck with `o`) keeps its last character, as
    // `col -b` does.
    let mut text = String::new();
    for c in String::from_utf8(output.stdout).expect("ASCII").chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

/// `--name` of every option of `command` that has one: the visible ones, or the hidden ones.
fn long_options(command: &clap::Command, hidden: bool) -> Vec<String> {
    command
        .get_arguments()
        .filter(|arg| arg.is_hide_set() == hidden)
        .filter_map(|arg| arg.get_long())
        .map(|long| format!("--{long}"))
        .collect()
}

/// The options that have an entry of their own in a rendered page: the tag lines of its
/// OPTIONS section, indented 7 columns (their descriptions are indented 14), such as
/// `-f, --format <FORMAT> [default: text]` or `--scan`.
fn option_entries(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("       "))
        .filter(|tag| tag.starts_with('-'))
        .flat_map(|tag| tag.split(", ").map(|part| part.split_whitespace().next().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn man_pages_cover_every_subcommand_and_each_of_its_long_options() {
    let dir = tempfile::tempdir().unwrap();
    let written = man::write_pages(dir.path()).expect("the generator writes the pages");
    let command = man::command();
    let subcommands: Vec<&clap::Command> = command.get_subcommands().filter(|sub| !sub.is_hide_set()).collect();
    let names: BTreeSet<String> = written.iter().map(|page| page.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let expected: BTreeSet<String> = std::iter::once("memtrace.1".to_owned())
        .chain(subcommands.iter().map(|sub| format!("memtrace-{}.1", sub.get_name())))
        .collect();
    assert_eq!(names, expected);
    for known in ["run", "record", "faults", "report"] {
        assert!(names.contains(&format!("memtrace-{known}.1")), "no page for {known}: {names:?}");
    }

    let top = rendered(&dir.path().join("memtrace.1"));
    let entries = option_entries(&top);
    for option in long_options(&command, false) {
        assert!(entries.contains(&option), "memtrace.1 has no entry for {option}:\n{top}");
    }
    for sub in &subcommands {
        assert!(top.contains(&format!("memtrace-{}(1)", sub.get_name())), "memtrace.1 does not list {}:\n{top}", sub.get_name());
    }

    let mut checked = BTreeSet::new();
    for sub in &subcommands {
        let page = rendered(&dir.path().join(format!("memtrace-{}.1", sub.get_name())));
        let entries = option_entries(&page);
        let options = long_options(sub, false);
        assert!(options.contains(&"--verbose".to_owned()), "the global --verbose reaches {}", sub.get_name());
        for option in &options {
            assert!(entries.contains(option), "memtrace-{}.1 has no entry for {option}:\n{page}", sub.get_name());
            checked.insert((sub.get_name().to_owned(), option.clone()));
        }
        // The hidden testing and benchmarking options stay out of the pages.
        for option in long_options(sub, true) {
            assert!(!page.contains(&option), "memtrace-{}.1 shows the hidden {option}", sub.get_name());
        }
        // Each page shows its own help text, not just the option names.
        let about = sub.get_about().expect("every subcommand has an about").to_string();
        let first_words: String = about.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
        assert!(page.split_whitespace().collect::<Vec<_>>().join(" ").contains(&first_words), "{first_words:?} not in:\n{page}");
    }
    // Options clap knows for sure were among those checked (a page of none would not pass).
    for (sub, option) in [("run", "--no-leak-kinds"), ("run", "--check"), ("record", "--scan"), ("record", "--interval"), ("faults", "--fault-period"), ("report", "--weight")] {
        assert!(checked.contains(&(sub.to_owned(), option.to_owned())), "{option} of {sub} was not checked");
    }
}
