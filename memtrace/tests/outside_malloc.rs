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
