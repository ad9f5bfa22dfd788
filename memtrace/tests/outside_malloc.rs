//! Memory outside malloc: mmap, munmap, mremap, System V and POSIX shared memory, brk; each
//! counted in its own category, by the function that made it, and malloc's own mmap for a
//! large block not counted twice.
mod common;

use common::*;

#[test]
fn mappings_shared_memory_and_break_growth_by_function() {
    let _serial = serial();
    let binary = build_c("outside");
    let (_, report) = memtrace_json_ok(&["run"], &[binary.to_str().unwrap()]);
    let page = 4096;
    let summary = &report["summary"];
    assert_eq!(summary["mmap_bytes"], (3 + 4 + 4 + 2 + 2) * page);
    assert_eq!(summary["shm_bytes"], 3 * page + 20000);
    assert_eq!(summary["brk_bytes"], 2 * page);
    // The 1 MiB malloc is one heap block, although glibc maps it with mmap of its own.
    assert_eq!(summary["outstanding_bytes"], 1 << 20);
    assert_eq!(summary["outstanding_allocations"], 1);
    assert_eq!(summary["lost_events"], 0);
    // The dynamic loader's mappings of the libraries are set apart.
    assert!(summary["loader_mmap_bytes"].as_u64().unwrap() > 0);

    let expected = [
        ("big_malloc", "heap", 1 << 20, 1),
        ("map_private", "mmap", 3 * page, 1),
        ("map_then_punch", "mmap", 4 * page, 2), // the hole splits it in two
        ("map_then_grow", "mmap", 4 * page, 1),
        ("map_then_shrink", "mmap", 2 * page, 1),
        ("map_file", "mmap", 2 * page, 1),
        ("map_posix_shm", "shm", 3 * page, 1),
        ("attach_sysv", "shm", 20000, 1),
        ("grow_break", "brk", 2 * page, 1),
    ];
    let stacks = report["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), expected.len(), "{report:#}");
    for (function, kind, bytes, pieces) in expected {
        let stack = stack_from(&report, function);
        assert_eq!(stack["kind"], kind, "{stack:#}");
        assert_eq!(stack["bytes"], bytes, "{stack:#}");
        assert_eq!(stack["allocations"], pieces, "{stack:#}");
        assert_eq!(stack["frames"][1]["function"], "main", "{stack:#}");
    }
    // Nothing from what was given back.
    assert!(!stacks.iter().any(|stack| stack["frames"][0]["function"] == "map_and_unmap"));
    assert!(!stacks.iter().any(|stack| stack["frames"][0]["function"] == "attach_and_detach"));
    // The per-process summary says the same.
    let process = &report["processes"][0]["summary"];
    assert_eq!(process["mmap_bytes"], summary["mmap_bytes"]);
    assert_eq!(process["shm_bytes"], summary["shm_bytes"]);
    assert_eq!(process["brk_bytes"], summary["brk_bytes"]);
    assert_no_probes_left();
}

/// Thread stacks glibc maps in pthread_create, and keeps after the threads end, are the C
/// library's (`allocator` stacks, `summary.allocator_mmap_bytes`), not the program's mappings.
#[test]
fn the_c_librarys_thread_stacks_are_its_own_category() {
    let _serial = serial();
    let binary = build_variant("thread_stacks.c", "thread_stacks", "cc", &["-O1", "-g", "-pthread"], &[]);
    let (output, report) = memtrace_json_ok(&["run"], &[binary.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stack_mapping: u64 =
        stdout.trim().strip_prefix("stack mapping ").and_then(|size| size.parse().ok()).expect("stack mapping N");
    let summary = &report["summary"];
    assert_eq!(summary["allocator_mmap_bytes"], 3 * stack_mapping, "{summary:#}");
    assert_eq!(summary["mmap_bytes"], 2 * 4096, "{summary:#}");
    let stacks = report["stacks"].as_array().unwrap();
    let allocator: Vec<_> = stacks.iter().filter(|stack| stack["kind"] == "allocator").collect();
    assert_eq!(allocator.len(), 1, "{allocator:#?}");
    assert_eq!(allocator[0]["bytes"], 3 * stack_mapping);
    assert_eq!(allocator[0]["allocations"], 3);
    let functions: Vec<&str> =
        allocator[0]["frames"].as_array().unwrap().iter().filter_map(|frame| frame["function"].as_str()).collect();
    assert!(functions.contains(&"main"), "{functions:?}");
    assert!(functions.iter().any(|name| name.contains("pthread_create")), "{functions:?}");
    assert_eq!(stack_from(&report, "own_mapping")["kind"], "mmap");
    assert_eq!(stack_from(&report, "own_mapping")["bytes"], 2 * 4096);
    // Each process's numbers say the same.
    assert_eq!(report["processes"][0]["summary"]["allocator_mmap_bytes"], 3 * stack_mapping);
}
