//! Issue 17's target: every leak program (tests/programs/lk_*.c) built -O2 without frame
//! pointers, and once -O0 with them, run under memtrace (all of one build in one `memtrace run`
//! of a shell running them one after another) and each under valgrind memcheck; each of
//! valgrind's loss records is matched with memtrace's stack of the same leak kind, bytes and
//! blocks in that program's processes, and their function chains compared up to `main` (or the
//! thread's start). At least 95% must match exactly in the optimized builds, 98% with frame
//! pointers; the mismatches are printed as a table.
mod common;

use std::path::{Path, PathBuf};

use common::{chains::*, *};
use serde_json::Value;

/// Programs left out, and why.
const LEFT_OUT: &[(&str, &str)] = &[("lk_serve", "runs until it is killed (for record --scan)")];

/// Arguments some programs need.
fn arguments(name: &str) -> Vec<&'static str> {
    match name {
        "lk_crash" => vec!["leak"],
        _ => vec![],
    }
}

fn leak_programs() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the programs")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| Some(file.strip_prefix("lk_")?.strip_suffix(".c")?.to_owned()))
        .map(|name| format!("lk_{name}"))
        .filter(|name| !LEFT_OUT.iter().any(|(left_out, _)| left_out == name))
        .collect();
    names.sort();
    names
}

/// A chain as compared: glibc's aliases made one (`pthread_create` and `__pthread_create_2_1`,
/// `puts` and `_IO_puts`), up to main or the thread's start.
fn comparable(names: &[String]) -> Vec<String> {
    let public = public_names(names);
    let end =
        public.iter().position(|name| name == "main" || name == "start_thread").map_or(public.len(), |index| index + 1);
    canonical_names(&names[..end])
}

/// One compared loss record.
struct Compared {
    program: String,
    kind: String,
    bytes: u64,
    blocks: u64,
    valgrind: Vec<String>,
    /// memtrace's chain for the stack of the same kind and size, if there was one.
    memtrace: Option<Vec<String>>,
}

impl Compared {
    fn exact(&self) -> bool {
        self.memtrace.as_ref() == Some(&self.valgrind)
    }
}

/// The command line of one program.
fn command_of<'a>(name: &str, binary: &'a Path) -> Vec<&'a str> {
    let mut command = vec![path(binary)];
    command.extend(arguments(name));
    command
}

/// The pids of the processes that ran `binary` in the report, and of their children.
fn processes_of(report: &Value, binary: &Path) -> Vec<u64> {
    let processes = report["processes"].as_array().expect("processes");
    let mut pids: Vec<u64> = processes
        .iter()
        .filter(|process| process["command"][0] == path(binary))
        .filter_map(|process| process["pid"].as_u64())
        .collect();
    loop {
        let children: Vec<u64> = processes
            .iter()
            .filter(|process| process["parent_pid"].as_u64().is_some_and(|parent| pids.contains(&parent)))
            .filter_map(|process| process["pid"].as_u64())
            .filter(|pid| !pids.contains(pid))
            .collect();
        if children.is_empty() {
            return pids;
        }
        pids.extend(children);
    }
}

/// Compares valgrind's loss records for `program` with memtrace's stacks of its processes in
/// `report`. Call it holding `serial()` (valgrind).
fn compare(program: &str, binary: &Path, report: &Value) -> Vec<Compared> {
    let command = command_of(program, binary);
    let records: Vec<LossRecord> =
        valgrind_records(&command, &[]).into_iter().flat_map(|(_, records)| records).collect();
    let pids = processes_of(report, binary);
    assert!(!pids.is_empty(), "{program} ran in no process of the report: {:#}", report["processes"]);
    // memtrace's stacks of the program's processes, each usable once.
    let mut stacks: Vec<(&Value, Vec<String>)> = heap_stacks(report)
        .into_iter()
        .filter(|stack| stack["pid"].as_u64().is_some_and(|pid| pids.contains(&pid)))
        .map(|stack| (stack, comparable(&names(stack))))
        .collect();
    let mut compared = Vec::new();
    for record in records {
        let valgrind = comparable(&record.chain);
        let same_size = |stack: &Value| {
            stack["leak_kind"] == record.kind.as_str()
                && stack["bytes"] == record.bytes
                && stack["allocations"] == record.blocks
        };
        let exact = stacks.iter().position(|(stack, chain)| same_size(stack) && *chain == valgrind);
        let any = stacks.iter().position(|(stack, _)| same_size(stack));
        let memtrace = exact.or(any).map(|index| stacks.remove(index).1);
        compared.push(Compared {
            program: program.to_owned(),
            kind: record.kind,
            bytes: record.bytes,
            blocks: record.blocks,
            valgrind,
            memtrace,
        });
    }
    compared
}

fn build_all(flags: &[&str], suffix: &str) -> Vec<(String, PathBuf)> {
    leak_programs()
        .into_iter()
        .map(|name| {
            let flags = [flags, &["-pthread"]].concat();
            let binary = build_variant(&format!("{name}.c"), &format!("{name}{suffix}"), "cc", &flags, &[]);
            (name, binary)
        })
        .collect()
}

/// Runs every program both ways; prints the table of mismatches; returns (exact, compared).
fn match_rate(flags: &[&str], suffix: &str) -> (usize, usize) {
    let programs = build_all(flags, suffix);
    // One memtrace run for them all (one attach, not one per program): a shell runs each in
    // turn, and exits by itself after the last (not exec'ing it).
    let mut script: String = programs
        .iter()
        .map(|(name, binary)| {
            command_of(name, binary).iter().map(|word| format!("'{word}' ")).collect::<String>() + "\n"
        })
        .collect();
    script.push_str("exit 0\n");
    let _serial = serial();
    let (output, report) = memtrace_json(&["run"], &["/bin/sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_probes_left();
    let mut all = Vec::new();
    for (name, binary) in &programs {
        all.extend(compare(name, binary, &report));
    }
    let exact = all.iter().filter(|compared| compared.exact()).count();
    println!(
        "{} ({}): {exact} of {} loss records match valgrind's chain exactly",
        flags.join(" "),
        programs.len(),
        all.len()
    );
    println!("| program | kind | bytes in blocks | valgrind | memtrace |");
    println!("| --- | --- | --- | --- | --- |");
    for compared in all.iter().filter(|compared| !compared.exact()) {
        println!(
            "| {} | {} | {} in {} | {} | {} |",
            compared.program,
            compared.kind,
            compared.bytes,
            compared.blocks,
            compared.valgrind.join(" < "),
            compared.memtrace.as_ref().map_or("(no stack of that kind and size)".to_owned(), |chain| chain.join(" < "))
        );
    }
    for (program, why) in LEFT_OUT {
        println!("left out: {program}: {why}");
    }
    (exact, all.len())
}

#[test]
fn optimized_builds_without_frame_pointers_match_valgrind_95_percent() {
    let (exact, total) = match_rate(&["-O2", "-g", "-fomit-frame-pointer"], "_o2");
    assert!(total >= 20, "only {total} loss records");
    assert!(exact * 100 >= total * 95, "{exact} of {total} exact");
}

#[test]
fn builds_with_frame_pointers_match_valgrind_98_percent() {
    let (exact, total) = match_rate(&["-O0", "-g", "-fno-omit-frame-pointer"], "_o0");
    assert!(total >= 20, "only {total} loss records");
    assert!(exact * 100 >= total * 98, "{exact} of {total} exact");
}
