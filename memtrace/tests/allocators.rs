//! Every allocator entry point and every allocator, with exact numbers.
mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// Outstanding bytes by the innermost frame's function.
fn bytes_by_function(report: &Value) -> BTreeMap<String, u64> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stack| {
            let function = stack["frames"][0]["function"].as_str().unwrap_or("??").to_owned();
            (function, stack["bytes"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn every_c_allocator_function_and_reallocs_four_cases() {
    let _serial = serial();
    let binary = build_c("allocators");
    // Every probe at its function's entry.
    let (_, report) = memtrace_json_ok(&["run", "--probe-at-entry"], &[binary.to_str().unwrap()]);
    let expected: BTreeMap<String, u64> = [
        ("use_malloc", 100),
        ("use_calloc", 210),
        ("use_realloc_null", 300),
        ("use_realloc_grow", 2000),
        ("use_realloc_fail", 40),
        ("use_reallocarray", 360),
        ("use_posix_memalign", 500),
        ("use_aligned_alloc", 1024),
        ("use_memalign", 700),
        ("use_valloc", 4000),
        ("use_pvalloc", 5000),
    ]
    .into_iter()
    .map(|(function, bytes)| (function.to_owned(), bytes))
    .collect();
    assert_eq!(bytes_by_function(&report), expected);
    let summary = &report["summary"];
    assert_eq!(summary["outstanding_bytes"], 14234);
    assert_eq!(summary["outstanding_allocations"], 11);
    // The 11 leaked, the 16 bytes realloc grew and the 24 bytes realloc(p, 0) freed; glibc's
    // realloc(NULL, n) calling malloc inside counts once.
    assert_eq!(summary["total_allocations"], 13);
    assert_eq!(summary["total_frees"], 2);
    assert_eq!(summary["total_freed_bytes"], 16 + 24);
    assert_eq!(summary["failed_reallocs"], 1);
    assert_eq!(summary["null_frees"], 1);
    assert_eq!(summary["unknown_frees"], 0);
    assert_eq!(summary["lost_events"], 0);
    for stack in report["stacks"].as_array().unwrap() {
        assert_eq!(stack["frames"][1]["function"], "main", "{stack:#}");
    }

    // By default free's probe sits on the branch of glibc's NULL check (emulated, where the
    // test before it would be single-stepped): every number is the same, free(NULL) included.
    let (output, placed) = memtrace_json(&["-v", "run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("probing free in ") && stderr.contains("3 bytes past its entry, on `je "), "{stderr}");
    assert_eq!(placed["summary"], report["summary"]);
    assert_eq!(bytes_by_function(&placed), bytes_by_function(&report));

    // Per-thread state kept in the kernel's hash maps, as on machines whose pid_max is beyond
    // the per-id arrays: the same numbers.
    let (_, hashed) = memtrace_json_ok(&["run", "--id-slots", "0"], &[binary.to_str().unwrap()]);
    assert_eq!(hashed["summary"], report["summary"]);
    assert_eq!(bytes_by_function(&hashed), bytes_by_function(&report));
    assert_no_probes_left();
}

#[test]
fn cxx_new_and_delete_in_every_form_are_attributed_to_the_caller() {
    let _serial = serial();
    let binary = build("cxx_new.cpp", "c++", &["-std=c++17", "-O0", "-g", "-fno-omit-frame-pointer"]);
    let (_, report) = memtrace_json_ok(&["run"], &[binary.to_str().unwrap()]);
    // The program's own blocks, each named by the function that called new, not libstdc++.
    let own: BTreeMap<String, u64> =
        bytes_by_function(&report).into_iter().filter(|(function, _)| function.starts_with("make_")).collect();
    let expected: BTreeMap<String, u64> = [
        ("make_int()", 4),
        ("make_array()", 40),
        ("make_nothrow()", 33),
        ("make_aligned()", 64),
        ("make_aligned_array()", 256),
    ]
    .into_iter()
    .map(|(function, bytes)| (function.to_owned(), bytes))
    .collect();
    assert_eq!(own, expected);
    for function in expected.keys() {
        let stack = stack_from(&report, function);
        assert_eq!(stack["frames"][0]["module"], binary.to_str().unwrap());
        assert_eq!(stack["frames"][1]["function"], "main");
    }
    // libstdc++ allocates its exception-handling pool at start-up and keeps it: whatever it
    // holds is outside the program's 11 allocations.
    let summary = &report["summary"];
    let runtime_blocks = summary["outstanding_allocations"].as_u64().unwrap() - 5;
    assert_eq!(summary["total_allocations"].as_u64().unwrap(), 11 + runtime_blocks);
    // Six deletes, each counted once although operator delete calls free (and sized delete
    // calls plain delete).
    assert_eq!(summary["total_frees"], 6);
    assert_eq!(summary["total_freed_bytes"], 4 + 20 + 16 + 9 + 64 + 128);
    assert_eq!(summary["unknown_frees"], 0);
    assert_eq!(summary["lost_events"], 0);

    // The marks operator delete leaves, kept in the kernel's hash map instead of the per-id
    // array (as on machines whose pid_max is beyond it): the same numbers.
    let (_, hashed) = memtrace_json_ok(&["run", "--id-slots", "0"], &[binary.to_str().unwrap()]);
    assert_eq!(hashed["summary"], report["summary"]);
    assert_eq!(bytes_by_function(&hashed), bytes_by_function(&report));
    assert_no_probes_left();
}
