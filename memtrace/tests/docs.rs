//! The reference documentation generated from the code: the man pages from the clap
//! definitions (examples/man.rs) and the JSON report's schema from the Report types
//! (examples/schema.rs, committed as docs/report.schema.json). Neither needs root.
#[allow(dead_code)]
#[path = "../examples/man.rs"]
mod man;
#[allow(dead_code)]
#[path = "../examples/schema.rs"]
mod schema;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

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
/// `-f, --format <FORMAT> [default: text]`, `--scan` or `--gen-suppressions[=<yes|all|no>]`.
fn option_entries(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("       "))
        .filter(|tag| tag.starts_with('-'))
        // `--gen-suppressions[=<yes|all|no>]`: an optional value is part of the tag.
        .flat_map(|tag| {
            tag.split(", ")
                .map(|part| part.split(|c: char| c.is_whitespace() || c == '[').next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn man_pages_cover_every_subcommand_and_each_of_its_long_options() {
    let dir = tempfile::tempdir().unwrap();
    let written = man::write_pages(dir.path()).expect("the generator writes the pages");
    let command = man::command();
    let subcommands: Vec<&clap::Command> = command.get_subcommands().filter(|sub| !sub.is_hide_set()).collect();
    let names: BTreeSet<String> =
        written.iter().map(|page| page.file_name().unwrap().to_string_lossy().into_owned()).collect();
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
        assert!(
            top.contains(&format!("memtrace-{}(1)", sub.get_name())),
            "memtrace.1 does not list {}:\n{top}",
            sub.get_name()
        );
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
        assert!(
            page.split_whitespace().collect::<Vec<_>>().join(" ").contains(&first_words),
            "{first_words:?} not in:\n{page}"
        );
    }
    // Options clap knows for sure were among those checked (a page of none would not pass).
    for (sub, option) in [
        ("run", "--no-leak-kinds"),
        ("run", "--check"),
        ("record", "--scan"),
        ("record", "--interval"),
        ("faults", "--fault-period"),
        ("report", "--weight"),
    ] {
        assert!(checked.contains(&(sub.to_owned(), option.to_owned())), "{option} of {sub} was not checked");
    }
}

#[test]
fn committed_report_schema_is_the_one_the_report_types_generate() {
    let path = schema::committed_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = schema::schema_json();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or("its length".to_owned(), |index| format!("line {}", index + 1));
        panic!(
            "{} is not the schema the Report types generate (first difference at {line}): \
             run `cargo xtask schema` and commit the file",
            path.display()
        );
    }
    // serde's attributes followed: the counts and the leak kinds flattened into the summary,
    // the leak kinds and the faults optional (skipped when absent), enums in lowercase.
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let names = |value: &serde_json::Value| -> Vec<String> {
        value.as_array().unwrap().iter().map(|name| name.as_str().unwrap().to_owned()).collect()
    };
    let summary = &schema["$defs"]["Summary"];
    for field in ["outstanding_bytes", "lost_events", "definitely_lost_bytes", "collection"] {
        assert!(summary["properties"].get(field).is_some(), "Summary has no {field}: {summary:#}");
    }
    let summary_required = names(&summary["required"]);
    assert!(summary_required.contains(&"outstanding_bytes".to_owned()), "{summary_required:?}");
    assert!(!summary_required.contains(&"definitely_lost_bytes".to_owned()), "{summary_required:?}");
    let required = names(&schema["required"]);
    assert!(required.contains(&"summary".to_owned()) && !required.contains(&"faults".to_owned()), "{required:?}");
    let modes: Vec<&str> = schema["$defs"]["Mode"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mode| mode["const"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["run", "record", "serve"]);
}

/// docs/json.md's field tables: for each `### `Type`` heading, the fields its table's first
/// column names in backticks; a row "every field of [`Other`]..." stands for Other's fields.
fn documented_fields(markdown: &str, schema: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            let name = heading.split('`').next().unwrap().to_owned();
            types.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(name), Some(row)) = (&current, line.strip_prefix("| ")) else { continue };
        let cell = row.split(" |").next().unwrap();
        if cell == "field" || cell.starts_with("---") {
            continue;
        }
        let fields = types.get_mut(name).unwrap();
        if let Some(other) = cell.strip_prefix("every field of [`") {
            let other = other.split('`').next().unwrap();
            let properties = schema["$defs"][other]["properties"].as_object();
            fields.extend(properties.unwrap_or_else(|| panic!("no type {other} in the schema")).keys().cloned());
        } else {
            fields.extend(cell.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    types
}

#[test]
fn json_md_explains_every_field_of_the_schema_and_no_other() {
    let schema: serde_json::Value = serde_json::from_str(&schema::schema_json()).unwrap();
    let markdown = std::fs::read_to_string(schema::committed_path().with_file_name("json.md")).unwrap();
    let documented = documented_fields(&markdown, &schema);
    // Every object type of the schema, the top level as `Report`; enums have no fields.
    let mut objects: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let fields = |value: &serde_json::Value| {
        value["properties"].as_object().map(|properties| properties.keys().cloned().collect())
    };
    objects.insert("Report".to_owned(), fields(&schema).unwrap());
    for (name, definition) in schema["$defs"].as_object().unwrap() {
        if let Some(names) = fields(definition) {
            objects.insert(name.clone(), names);
        }
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        objects.keys().collect::<Vec<_>>(),
        "docs/json.md needs one `### `Type`` table per object type of docs/report.schema.json"
    );
    for (name, fields) in &objects {
        let missing: Vec<_> = fields.difference(&documented[name]).collect();
        let unknown: Vec<_> = documented[name].difference(fields).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "docs/json.md, {name}: fields missing {missing:?}, not in the schema {unknown:?}"
        );
    }
}
