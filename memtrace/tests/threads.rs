//! Many threads allocating and freeing at once, with frees on other threads than the
//! allocation: memtrace's outstanding numbers equal what the program itself counts.
mod common;

use common::*;

#[test]
fn eight_threads_with_cross_thread_frees_match_the_programs_own_count() {
    eight_threads_with(&[]);
}

/// Per-thread state in the kernel's hash maps, as on machines whose pid_max is beyond the
/// per-id arrays.
#[test]
fn eight_threads_match_with_per_thread_state_in_hash_maps() {
    eight_threads_with(&["--id-slots", "0"]);
}

fn eight_threads_with(options: &[&str]) {
    let _serial = serial();
    let binary =
        build_variant("threads.c", "threads", "cc", &["-O1", "-g", "-fno-omit-frame-pointer", "-pthread"], &[]);
    let (output, report) = memtrace_json_ok(&[&["run"], options].concat(), &[binary.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u64> = stdout.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    let [blocks, bytes, allocations, frees] = numbers[..] else { panic!("unexpected output {stdout:?}") };
    assert!(allocations > 300_000 && frees > 300_000, "{stdout}");

    let summary = &report["summary"];
    assert_eq!(summary["lost_events"], 0, "{summary:#}");
    let own = stack_from(&report, "allocate_block");
    assert_eq!(own["bytes"].as_u64(), Some(bytes), "{stdout}");
    assert_eq!(own["allocations"].as_u64(), Some(blocks), "{stdout}");
    assert_eq!(own["frames"][1]["function"], "worker");
    // Every allocation and free the program made was seen (glibc adds a few of its own for
    // the threads' set-up).
    let seen_allocations = summary["total_allocations"].as_u64().unwrap();
    let seen_frees = summary["total_frees"].as_u64().unwrap();
    assert!((allocations..allocations + 50).contains(&seen_allocations), "{seen_allocations} vs {allocations}");
    assert!((frees..frees + 50).contains(&seen_frees), "{seen_frees} vs {frees}");
    assert_no_probes_left();
}
