//! Symbolization on real programs: inline frames, C++ and Rust names, file and line.
mod common;

use common::*;
use serde_json::Value;

/// (function, inlined, line) of each frame.
fn frames(stack: &Value) -> Vec<(String, bool, Option<u64>)> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            (
                frame["function"].as_str().unwrap_or("??").to_owned(),
                frame["inlined"].as_bool().unwrap(),
                frame["line"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn inlined_calls_show_as_their_own_frames() {
    let _serial = serial();
    let binary = build("inlined.c", "cc", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["summary"]["outstanding_bytes"], 777);
    let stack = stack_from(&report, "grab");
    let frames = frames(stack);
    assert_eq!(
        frames[..3],
        [
            ("grab".to_owned(), true, Some(line_of("inlined", "return malloc(size)"))),
            ("build_table".to_owned(), false, Some(line_of("inlined", "sink = grab(777)"))),
            ("main".to_owned(), false, Some(line_of("inlined", "build_table();"))),
        ]
    );
    // The inlined frame and the function it sits in share one address.
    assert_eq!(stack["frames"][0]["address"], stack["frames"][1]["address"]);
    assert_no_probes_left();
}

#[test]
fn cpp_names_are_demangled() {
    let _serial = serial();
    let binary = build("widgets.cpp", "c++", &["-O0", "-g", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stack = stack_from(&report, "inventory::Store<long>::reserve(unsigned long)");
    assert_eq!(stack["bytes"], 800);
    assert_eq!(stack["frames"][0]["line"], line_of("widgets.cpp", "std::malloc(count"));
    assert_eq!(stack["frames"][0]["file"], source_path("widgets.cpp"));
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_no_probes_left();
}

#[test]
fn rust_names_are_demangled() {
    let _serial = serial();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let binary = build("rusty.rs", &rustc, &["-C", "force-frame-pointers=yes", "-C", "opt-level=0", "-g"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    // The allocation passes through the standard library's Vec code before malloc; the stack
    // holds the program's own function, demangled without its hash, at the right line.
    let stacks = report["stacks"].as_array().unwrap();
    let stack = stacks
        .iter()
        .find(|stack| frames(stack).iter().any(|(function, _, _)| function == "rusty::leak_buffer"))
        .unwrap_or_else(|| panic!("no stack through rusty::leak_buffer: {report:#}"));
    assert_eq!(stack["bytes"], 3000);
    let frames = frames(stack);
    let position = frames.iter().position(|(function, _, _)| function == "rusty::leak_buffer").unwrap();
    assert_eq!(frames[position].2, Some(line_of("rusty.rs", "vec![7u8; 3000]")));
    assert_eq!(frames[position + 1].0, "rusty::main");
    assert_no_probes_left();
}

#[test]
fn without_debug_info_the_symbol_table_names_functions() {
    let _serial = serial();
    // No -g: no DWARF, only the ELF symbol table.
    let binary = build("leaky.c", "cc", &["-O0", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stack = stack_from(&report, "leak_with_malloc");
    assert_eq!(stack["bytes"], 4000);
    assert_eq!(stack["frames"][0]["file"], Value::Null);
    assert_eq!(stack["frames"][0]["line"], Value::Null);
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_no_probes_left();
}
