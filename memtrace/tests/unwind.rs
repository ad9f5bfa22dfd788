//! Stacks of code built without frame pointers, walked by unwind tables (`--unwind auto`, the
//! default): each leak's stack must name the same function chain valgrind prints for the same
//! block (valgrind unwinds by CFI too), run in the test. `--unwind fp` keeps the walk by frame
//! pointer.
mod common;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

/// -O2 without frame pointers, with line info for valgrind and memtrace alike.
const OPTIMIZED: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

/// The function names of a stack, innermost first (inlined frames included, as valgrind lists
/// them).
fn names(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|frame| frame["function"].as_str().unwrap_or("??").to_owned())
        .collect()
}

/// Up to and including `main`: where valgrind stops by default.
fn up_to_main(names: &[String]) -> Vec<String> {
    let end = names.iter().position(|name| name == "main").map_or(names.len(), |index| index + 1);
    names[..end].to_vec()
}

/// glibc exports a function under several names at one address (`strdup`, `__strdup`,
/// `__GI___strdup`, versioned `dlopen@@GLIBC_2.34`); valgrind prints the public one, memtrace
/// the one its debug info has.
fn public_name(name: &str) -> String {
    let name = name.split("@@").next().unwrap_or(name);
    name.trim_start_matches("__GI_").trim_start_matches('_').to_owned()
}

/// Up to and including `function`.
fn up_to(names: &[String], function: &str) -> Vec<String> {
    let end = names.iter().position(|name| name == function).map_or(names.len(), |index| index + 1);
    names[..end].to_vec()
}

fn public_names(names: &[String]) -> Vec<String> {
    names.iter().map(|name| public_name(name)).collect()
}

/// Each definitely lost block's chain as valgrind prints it, below the allocator function
/// (`malloc`), by block size.
fn valgrind_chains(command: &[&str]) -> Vec<(u64, Vec<String>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("valgrind.log");
    let output = Command::new("valgrind")
        .args(["--leak-check=full", "--num-callers=50", "--run-libc-freeres=no"])
        .arg(format!("--log-file={}", log.display()))
        .args(command)
        .output()
        .expect("valgrind runs (cargo xtask setup installs it)");
    assert!(output.status.code().is_some(), "valgrind was killed: {:?}", output.status);
    let text = std::fs::read_to_string(&log).expect("valgrind's log");
    let mut chains = Vec::new();
    let mut current: Option<(u64, Vec<String>)> = None;
    for line in text.lines() {
        // "==1== 4,242 bytes in 1 blocks are definitely lost in loss record 1 of 1"
        let body = line.split_once("== ").map_or(line, |(_, body)| body).trim_start();
        if body.contains("are definitely lost in loss record") {
            chains.extend(current.take());
            let bytes = body.split_whitespace().next().unwrap_or("0").replace(',', "");
            current = Some((bytes.parse().expect("a byte count"), Vec::new()));
        } else if let Some((_, chain)) = current.as_mut()
            && let Some(frame) = body.strip_prefix("by ").or_else(|| body.strip_prefix("at "))
        {
            // "0x109181: leaf_alloc (unwind_chain.c:14)"
            let function = frame.split_once(": ").map_or("??", |(_, rest)| rest.split(" (").next().unwrap_or("??"));
            chain.push(function.to_owned());
        } else if body.is_empty() {
            chains.extend(current.take());
        }
    }
    chains.extend(current.take());
    // The first frame is valgrind's own malloc.
    for (_, chain) in &mut chains {
        assert_eq!(chain.first().map(String::as_str), Some("malloc"), "{text}");
        chain.remove(0);
    }
    assert!(!chains.is_empty(), "valgrind found no definite leak:\n{text}");
    chains
}

fn heap_stack_of(report: &Value, bytes: u64) -> &Value {
    report["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .find(|stack| stack["kind"] == "heap" && stack["bytes"] == bytes)
        .unwrap_or_else(|| panic!("no heap stack of {bytes} bytes in {report:#}"))
}

fn path(binary: &Path) -> &str {
    binary.to_str().expect("a UTF-8 path")
}

#[test]
fn optimized_chain_without_frame_pointers_matches_valgrind() {
    let _serial = serial();
    let binary = build_variant("unwind_chain.c", "unwind_chain", "cc", OPTIMIZED, &[]);
    let (_, report) = memtrace_json_ok(&["run"], &[path(&binary)]);
    let stack = heap_stack_of(&report, 4242);
    let memtrace = names(stack);
    let expected: Vec<String> =
        ["leaf_alloc", "level5", "level4", "level3", "level2", "level1", "main"].map(String::from).to_vec();
    assert_eq!(up_to_main(&memtrace), expected, "{stack:#}");
    // Below main, libc's start frames, to the outermost: the walk is complete.
    assert_eq!(memtrace[expected.len()..], ["__libc_start_call_main", "__libc_start_main_impl", "_start"], "{stack:#}");
    assert_eq!(stack["truncated"], false);
    assert_eq!(report["unwind"]["method"], "auto");
    let chains = valgrind_chains(&[path(&binary)]);
    assert_eq!(chains, vec![(4242, expected)]);
    assert_no_probes_left();
}

#[test]
fn leaks_inside_libc_name_the_programs_callers() {
    let _serial = serial();
    let binary = build_variant("unwind_libc.c", "unwind_libc", "cc", OPTIMIZED, &[]);
    let (_, report) = memtrace_json_ok(&["run"], &[path(&binary)]);
    let chains = valgrind_chains(&[path(&binary)]);
    assert_eq!(chains.len(), 2, "{chains:?}");
    for (bytes, valgrind) in chains {
        let stack = heap_stack_of(&report, bytes);
        let memtrace = up_to_main(&names(stack));
        assert_eq!(public_names(&memtrace), public_names(&valgrind), "{bytes} bytes: {stack:#}");
        assert_eq!(stack["truncated"], false);
    }
    // strdup's copy, getline's buffer: libc's frame first, the program's caller below it.
    let names_of = |bytes| public_names(&up_to_main(&names(heap_stack_of(&report, bytes))));
    assert_eq!(names_of(45), ["strdup", "duplicate_name", "main"]);
    assert_eq!(names_of(120), ["getdelim", "getline", "read_first_line", "main"]);
    assert_no_probes_left();
}

#[test]
fn worker_thread_stack_ends_at_the_thread_start() {
    let _serial = serial();
    let flags = [OPTIMIZED, &["-pthread"]].concat();
    let binary = build_variant("unwind_thread.c", "unwind_thread", "cc", &flags, &[]);
    let (_, report) = memtrace_json_ok(&["run"], &[path(&binary)]);
    let stack = heap_stack_of(&report, 3131);
    assert_eq!(names(stack), ["make_block", "worker", "start_thread", "clone3"], "{stack:#}");
    assert_eq!(stack["truncated"], false);
    // valgrind does not implement clone3, and glibc falls back to clone there.
    let chains = valgrind_chains(&[path(&binary)]);
    assert_eq!(chains, vec![(3131, ["make_block", "worker", "start_thread", "clone"].map(String::from).to_vec())]);
    assert_no_probes_left();
}

#[test]
fn frame_pointer_walk_is_kept_with_unwind_fp() {
    let _serial = serial();
    let optimized = build_variant("unwind_chain.c", "unwind_chain", "cc", OPTIMIZED, &[]);
    let (_, report) = memtrace_json_ok(&["run", "--unwind", "fp"], &[path(&optimized)]);
    let stack = heap_stack_of(&report, 4242);
    let walked = names(stack);
    // The frame-pointer walk sees the function that called malloc, then follows whatever RBP
    // holds: level5, level4 (no frame pointer) are never seen.
    assert_eq!(walked.first().map(String::as_str), Some("leaf_alloc"), "{stack:#}");
    assert!(!walked.iter().any(|name| name == "level5" || name == "level4"), "{stack:#}");
    assert_eq!(stack["truncated"], false);
    assert!(report.get("unwind").is_none(), "no unwind section with --unwind fp");

    // Built with frame pointers, the same walk sees every frame down to main.
    let with_frame_pointers =
        build_variant("unwind_chain.c", "unwind_chain_fp", "cc", &["-O2", "-g", "-fno-omit-frame-pointer"], &[]);
    let (_, report) = memtrace_json_ok(&["run", "--unwind", "fp"], &[path(&with_frame_pointers)]);
    let stack = heap_stack_of(&report, 4242);
    assert_eq!(
        up_to_main(&names(stack)),
        ["leaf_alloc", "level5", "level4", "level3", "level2", "level1", "main"],
        "{stack:#}"
    );
    assert_no_probes_left();
}

#[test]
fn a_library_constructor_run_by_dlopen_is_walked_through_the_loader() {
    let _serial = serial();
    let library = build_variant(
        "unwind_ctor_lib.c",
        "libunwind_ctor.so",
        "cc",
        &[OPTIMIZED, &["-shared", "-fPIC"]].concat(),
        &[],
    );
    let program = build_variant("unwind_dlopen.c", "unwind_dlopen", "cc", OPTIMIZED, &[]);
    let command = [path(&program), path(&library)];
    let (_, report) = memtrace_json_ok(&["run"], &command);
    let chains = valgrind_chains(&command);
    for (bytes, innermost) in [(777, "constructor_alloc"), (888, "library_inner")] {
        let stack = heap_stack_of(&report, bytes);
        let memtrace = up_to(&names(stack), "load_and_call");
        assert_eq!(memtrace.first().map(String::as_str), Some(innermost), "{stack:#}");
        assert_eq!(memtrace.last().map(String::as_str), Some("load_and_call"), "{stack:#}");
        assert_eq!(stack["truncated"], false);
        let (_, valgrind) = chains.iter().find(|(size, _)| *size == bytes).expect("valgrind lists the block");
        assert_eq!(public_names(&memtrace), public_names(&up_to(valgrind, "load_and_call")), "{bytes} bytes");
    }
    // The constructor ran before memtrace could read the loader's mmap: the loader's stop
    // (run mode) let memtrace apply the library's mappings first.
    let constructor = names(heap_stack_of(&report, 777));
    assert!(constructor.iter().any(|name| name == "_dl_init"), "{constructor:?}");
    assert_no_probes_left();
}
