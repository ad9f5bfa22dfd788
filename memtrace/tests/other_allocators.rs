//! Targets whose allocator is not glibc's: jemalloc, tcmalloc and mimalloc (Debian's
//! packages, installed by `cargo xtask setup`), a static binary, LD_PRELOAD, and a prefixed
//! allocator chosen by hand. Each traces the leaky program exactly as glibc's malloc does.
mod common;

use common::*;
use serde_json::Value;

const FLAGS: &[&str] = &["-O0", "-g", "-fno-omit-frame-pointer"];

/// leaky.c's own numbers, whatever the allocator. Runtimes may keep blocks of their own
/// (jemalloc and tcmalloc pull in libstdc++, whose exception pool stays allocated; static
/// glibc sets up stdio and locale data): those come from other stacks and add to the totals.
fn assert_leaky_numbers(report: &Value, binary: &std::path::Path) {
    let own: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stack| stack["frames"][0]["function"].as_str().is_some_and(|name| name.starts_with("leak_with_")))
        .collect();
    for stack in &own {
        assert_eq!(stack["frames"][0]["module"], binary.to_str().unwrap());
    }
    let own_bytes: u64 = own.iter().map(|stack| stack["bytes"].as_u64().unwrap()).sum();
    let own_blocks: u64 = own.iter().map(|stack| stack["allocations"].as_u64().unwrap()).sum();
    assert_eq!((own_bytes, own_blocks), (9300, 6), "{report:#}");
    for (function, bytes, allocations) in
        [("leak_with_malloc", 4000, 4), ("leak_with_calloc", 300, 1), ("leak_with_realloc", 5000, 1)]
    {
        let stack = stack_from(report, function);
        assert_eq!((stack["bytes"].as_u64(), stack["allocations"].as_u64()), (Some(bytes), Some(allocations)));
        assert_eq!(stack["frames"][1]["function"], "main");
    }
    let summary = &report["summary"];
    let runtime_blocks = summary["outstanding_allocations"].as_u64().unwrap() - own_blocks;
    // Every runtime block outstanding is one allocation more than the program's 107.
    assert!(summary["total_allocations"].as_u64().unwrap() >= 107 + runtime_blocks, "{summary:#}");
    assert!(summary["total_frees"].as_u64().unwrap() >= 101, "{summary:#}");
    assert_eq!(summary["unknown_frees"], 0);
    assert_eq!(summary["lost_events"], 0);
}

fn traced(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let output = memtrace()
        .arg("run")
        .args(args)
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(binary)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");
    assert_no_probes_left();
    serde_json::from_str(&std::fs::read_to_string(report_path).unwrap()).unwrap()
}

fn assert_allocator(report: &Value, library: &str) {
    let allocator = report["allocator"].as_str().unwrap();
    assert!(allocator.contains(library), "the allocator is {allocator}, not {library}");
}

/// leaky.c linked with `-lLIBRARY`, which then provides malloc and the rest.
fn linked_with(library: &str) {
    let binary = build_variant("leaky.c", &format!("leaky-{library}"), "cc", FLAGS, &[&format!("-l{library}")]);
    let report = traced(&binary, &[], &[]);
    assert_allocator(&report, &format!("lib{library}"));
    assert_leaky_numbers(&report, &binary);
}

#[test]
fn jemalloc() {
    linked_with("jemalloc");
}

#[test]
fn tcmalloc() {
    linked_with("tcmalloc");
}

#[test]
fn mimalloc() {
    linked_with("mimalloc");
}

#[test]
fn static_binary() {
    let binary =
        build_variant("leaky.c", "leaky-static", "cc", &["-O0", "-g", "-fno-omit-frame-pointer", "-static"], &[]);
    let report = traced(&binary, &[], &[]);
    assert_eq!(report["allocator"], binary.to_str().unwrap());
    assert_leaky_numbers(&report, &binary);
}

#[test]
fn ld_preload() {
    let binary = build_c("leaky");
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    let report = traced(&binary, &[], &[("LD_PRELOAD", jemalloc)]);
    assert_allocator(&report, "libjemalloc");
    assert_leaky_numbers(&report, &binary);
    // Chosen by hand, the same.
    let report = traced(&binary, &["--allocator-lib", jemalloc], &[("LD_PRELOAD", jemalloc)]);
    assert_eq!(report["allocator"], jemalloc);
    assert_leaky_numbers(&report, &binary);
}

#[test]
fn a_prefixed_allocator_chosen_by_hand() {
    let _serial = serial();
    let library = build_variant("prefixed_alloc.c", "libprefixed.so", "cc", &["-O1", "-g", "-shared", "-fPIC"], &[]);
    let directory = library.parent().unwrap().to_str().unwrap().to_owned();
    let binary = build_variant(
        "prefixed_user.c",
        "prefixed_user",
        "cc",
        FLAGS,
        &[&format!("-L{directory}"), &format!("-Wl,-rpath,{directory}"), "-lprefixed"],
    );
    let (_, report) = memtrace_json_ok(
        &["run", "--allocator-lib", library.to_str().unwrap(), "--symbol-prefix", "my_"],
        &[binary.to_str().unwrap()],
    );
    assert_eq!(report["allocator"], library.to_str().unwrap());
    let summary = &report["summary"];
    assert_eq!(summary["outstanding_bytes"], 3 * 128);
    assert_eq!(summary["outstanding_allocations"], 3);
    assert_eq!(summary["total_allocations"], 8);
    assert_eq!(summary["total_frees"], 5);
    assert_eq!(stack_from(&report, "keep_some")["allocations"], 3);
    // Without the prefix, the library's functions are not found in it.
    let output =
        memtrace().args(["run", "--allocator-lib", library.to_str().unwrap(), "--"]).arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no allocator found"), "{stderr}");
    assert_no_probes_left();
}
