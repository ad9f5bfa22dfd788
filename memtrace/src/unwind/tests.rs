//! The table builder on real files, against binutils' own reading of the same CFI
//! (`readelf --debug-dump=frames-interp`): every row of every FDE must find the rule readelf
//! shows for it.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use memtrace_common::unwind::{cfa_kind, rbp_kind};

use super::{cfi::Rule, module, table::Table};

/// One row of readelf's interpreted CFI: its address range and what it shows.
#[derive(Debug, Clone)]
struct Expected {
    start: u64,
    end: u64,
    cfa: String,
    rbp: Option<String>,
    ra: Option<String>,
    section: String,
}

/// One CIE or FDE as readelf shows it.
struct Entry {
    is_cie: bool,
    /// A CIE's own offset, an FDE's CIE pointer: both as readelf prints them.
    cie: String,
    /// An FDE's address range.
    range: (u64, u64),
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// readelf's rows of every FDE; an FDE without instructions has its CIE's first row.
fn readelf_rows(path: &Path) -> Vec<Expected> {
    let output = Command::new("readelf").arg("--debug-dump=frames-interp").arg(path).output().expect("readelf runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut expected = Vec::new();
    let mut section = String::new();
    // Each CIE's columns and first row, by section and offset.
    let mut cies: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let mut current: Option<Entry> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("Contents of the ") {
            finish_entry(current.take(), &section, &mut cies, &mut expected);
            section = name.split_whitespace().next().unwrap_or("").to_owned();
            continue;
        }
        let words = columns_of(line);
        if words.len() >= 4 && (words[3] == "CIE" || words[3] == "FDE") {
            finish_entry(current.take(), &section, &mut cies, &mut expected);
            let is_cie = words[3] == "CIE";
            let (cie, range) = if is_cie {
                (words[0].clone(), (0, 0))
            } else {
                let cie = words.iter().find_map(|word| word.strip_prefix("cie=")).unwrap().to_owned();
                let (low, high) =
                    words.iter().find_map(|word| word.strip_prefix("pc=")).unwrap().split_once("..").unwrap();
                (cie, (u64::from_str_radix(low, 16).unwrap(), u64::from_str_radix(high, 16).unwrap()))
            };
            current = Some(Entry { is_cie, cie, range, columns: Vec::new(), rows: Vec::new() });
            continue;
        }
        let Some(entry) = current.as_mut() else { continue };
        if words.first().is_some_and(|word| word == "LOC") {
            entry.columns = words;
        } else if words.first().is_some_and(|word| word.len() == 16 && u64::from_str_radix(word, 16).is_ok())
            && !entry.columns.is_empty()
        {
            entry.rows.push(words);
        }
    }
    finish_entry(current.take(), &section, &mut cies, &mut expected);
    expected
}

/// A line's columns; a register rule shows as `r10 (r10)`, one column.
fn columns_of(line: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        match words.last_mut() {
            Some(last) if word.starts_with('(') => *last = format!("{last} {word}"),
            _ => words.push(word.to_owned()),
        }
    }
    words
}

/// Keeps a CIE's first row, or turns an FDE's rows into expected ranges.
fn finish_entry(
    entry: Option<Entry>,
    section: &str,
    cies: &mut HashMap<String, (Vec<String>, Vec<String>)>,
    expected: &mut Vec<Expected>,
) {
    let Some(entry) = entry else { return };
    let key = format!("{section}:{}", entry.cie);
    if entry.is_cie {
        if let Some(first) = entry.rows.first() {
            cies.insert(key, (entry.columns, first.clone()));
        }
        return;
    }
    let (low, high) = entry.range;
    let (columns, rows) = if entry.rows.is_empty() {
        let Some((columns, first)) = cies.get(&key) else { return };
        let mut first = first.clone();
        first[0] = format!("{low:016x}");
        (columns.clone(), vec![first])
    } else {
        (entry.columns, entry.rows)
    };
    let column = |row: &[String], name: &str| {
        columns.iter().position(|column| column == name).and_then(|index| row.get(index).cloned())
    };
    for (index, row) in rows.iter().enumerate() {
        let start = u64::from_str_radix(&row[0], 16).unwrap();
        let end = rows.get(index + 1).map_or(high, |next| u64::from_str_radix(&next[0], 16).unwrap());
        expected.push(Expected {
            start,
            end,
            cfa: column(row, "CFA").unwrap(),
            rbp: column(row, "rbp"),
            ra: column(row, "ra"),
            section: section.to_owned(),
        });
    }
}

/// The rule a readelf row stands for; for a CFA expression, `None` (the PLT's or another).
fn rule_of(row: &Expected) -> Option<Rule> {
    match row.ra.as_deref() {
        None | Some("u") => return Some(Rule::END),
        Some("c-8") => {}
        Some(_) => return Some(Rule::UNSUPPORTED),
    }
    let (cfa_kind, cfa_offset) = if let Some(offset) = row.cfa.strip_prefix("rsp+") {
        (cfa_kind::RSP, offset.parse().unwrap())
    } else if let Some(offset) = row.cfa.strip_prefix("rbp+") {
        (cfa_kind::RBP, offset.parse().unwrap())
    } else if row.cfa == "exp" {
        return None;
    } else {
        return Some(Rule::UNSUPPORTED);
    };
    let (rbp_kind, rbp_offset) = match row.rbp.as_deref() {
        None | Some("u") | Some("s") => (rbp_kind::UNCHANGED, 0),
        Some(saved) => match saved.strip_prefix("c").and_then(|offset| offset.parse::<i16>().ok()) {
            Some(offset) => (rbp_kind::AT_CFA_OFFSET, offset),
            None => (rbp_kind::LOST, 0),
        },
    };
    Some(Rule { cfa_kind, cfa_offset, rbp_kind, rbp_offset })
}

fn as_rule(row: memtrace_common::unwind::UnwindRow) -> Rule {
    Rule { cfa_kind: row.cfa_kind, cfa_offset: row.cfa_offset, rbp_kind: row.rbp_kind, rbp_offset: row.rbp_offset }
}

/// Builds `path`'s table and checks it against readelf, row by row; returns the table and how
/// many rows were checked.
fn check_against_readelf(path: &Path) -> (Table, usize) {
    let built = module::build(&File::open(path).unwrap(), &path.display().to_string(), &[]).unwrap();
    let table = built.table;
    let rows = readelf_rows(path);
    assert!(!rows.is_empty(), "readelf shows no CFI for {}", path.display());
    // `.eh_frame` wins where both sections cover an address.
    let eh_frame: Vec<(u64, u64)> =
        rows.iter().filter(|row| row.section == ".eh_frame").map(|row| (row.start, row.end)).collect();
    let mut checked = 0;
    for row in rows.iter().filter(|row| row.start < row.end) {
        if row.section != ".eh_frame" && eh_frame.iter().any(|&(start, end)| start < row.end && row.start < end) {
            continue;
        }
        for address in [row.start, row.end - 1] {
            let found = table.row_at(address).map(as_rule);
            match rule_of(row) {
                Some(rule) => {
                    assert_eq!(found, Some(rule), "{} at {address:#x}: readelf shows {row:?}", path.display())
                }
                None => assert!(
                    found.is_some_and(|found| found.cfa_kind == cfa_kind::PLT || found == Rule::UNSUPPORTED),
                    "{} at {address:#x}: an expression became {found:?}",
                    path.display()
                ),
            }
        }
        checked += 1;
    }
    (table, checked)
}

fn compile(source: &str, name: &str, flags: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(source);
    let status = Command::new("cc").args(flags).arg("-o").arg(&binary).arg(&source).status().expect("cc runs");
    assert!(status.success());
    (dir, binary)
}

#[test]
fn debian_libc_table_matches_readelf() {
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let (table, checked) = check_against_readelf(libc);
    assert!(checked > 5000, "only {checked} rows checked");
    // Its .plt (16-byte stubs from 0x26000 on this build, found by its expression) is a PLT row.
    let plt = table.rows.iter().filter(|row| row.cfa_kind == cfa_kind::PLT).count();
    assert!(plt >= 1, "no PLT row in libc's table");
    // `clone3` and `_start`-like entry points end walks: some rows say so.
    assert!(table.rows.iter().any(|row| row.cfa_kind == cfa_kind::END));
}

#[test]
fn optimized_program_without_frame_pointers_matches_readelf() {
    let (_dir, binary) = compile("unwind_chain.c", "unwind_chain", &["-O2", "-g", "-fomit-frame-pointer"]);
    let (table, checked) = check_against_readelf(&binary);
    assert!(checked > 10);
    // level3 keeps its frame on RBP (a variable-length array): some row says CFA = RBP + 16,
    // with the caller's RBP saved at CFA - 16.
    let rbp_rows: Vec<_> = table.rows.iter().filter(|row| row.cfa_kind == cfa_kind::RBP).collect();
    assert!(
        rbp_rows
            .iter()
            .any(|row| row.cfa_offset == 16 && row.rbp_kind == rbp_kind::AT_CFA_OFFSET && row.rbp_offset == -16),
        "{rbp_rows:?}"
    );
}

#[test]
fn debug_frame_only_program_matches_readelf() {
    // No asynchronous unwind tables: GCC writes the program's CFI to .debug_frame only.
    let (_dir, binary) = compile(
        "unwind_chain.c",
        "unwind_chain_debug_frame",
        &["-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables"],
    );
    let (table, checked) = check_against_readelf(&binary);
    assert!(checked > 10);
    assert!(table.rows.len() > 10);
}
