//! The other ways of collecting: in-kernel aggregation (`--combined`), byte sampling
//! (`--sample-bytes`) and size filters (`--min-size`, `--max-size`), each against a program
//! with known allocation behaviour and against the default collection of the same program.
mod common;

use common::*;
use serde_json::Value;

/// One stack as two reports must agree on it: bytes, blocks, and its functions (the
/// process-independent part of its frames).
type ComparableStack = (u64, u64, Vec<Value>);

/// What two reports must agree on: the summary's numbers and each stack's bytes, blocks,
/// process-independent frames.
fn comparable(report: &Value) -> (Vec<Value>, Vec<ComparableStack>) {
    let summary = &report["summary"];
    let numbers = [
        "outstanding_bytes",
        "outstanding_allocations",
        "total_allocations",
        "total_allocated_bytes",
        "total_frees",
        "total_freed_bytes",
        "unknown_frees",
        "failed_reallocs",
        "dropped_by_exec",
        "lost_events",
    ]
    .iter()
    .map(|name| summary[*name].clone())
    .collect();
    let stacks = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stack| {
            let frames = stack["frames"].as_array().unwrap().iter().map(|frame| frame["function"].clone()).collect();
            (stack["bytes"].as_u64().unwrap(), stack["allocations"].as_u64().unwrap(), frames)
        })
        .collect();
    (numbers, stacks)
}

/// Each stack's innermost function and its bytes, in the report's order.
fn innermost_functions_and_bytes(report: &Value) -> Vec<(&str, u64)> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stack| (stack["frames"][0]["function"].as_str().unwrap(), stack["bytes"].as_u64().unwrap()))
        .collect()
}

#[test]
fn combined_gives_the_same_numbers_and_stacks_as_events() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let (_, events) = memtrace_json_ok(&["run"], &[leaky.to_str().unwrap()]);
    let (output, combined) = memtrace_json_ok(&["run", "--combined"], &[leaky.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");

    assert_eq!(combined["summary"]["collection"], "combined");
    assert_eq!(events["summary"]["collection"], "events");
    assert_eq!(combined["summary"]["outstanding_bytes"], 9300);
    assert_eq!(combined["summary"]["outstanding_allocations"], 6);
    assert_eq!(combined["summary"]["total_allocations"], 107);
    assert_eq!(combined["summary"]["total_frees"], 101);
    assert_eq!(comparable(&combined), comparable(&events));
    let realloc = stack_from(&combined, "leak_with_realloc");
    assert_eq!(realloc["frames"][0]["line"], line_of("leaky", "realloc(block, 5000)"));
    assert_no_probes_left();
}

#[test]
fn combined_follows_fork_and_exec_like_events() {
    let _serial = serial();
    let family = build_c("family");
    let leaky = build_c("leaky");
    let target = [family.to_str().unwrap(), leaky.to_str().unwrap()];
    let (_, events) = memtrace_json_ok(&["run"], &target);
    let (_, combined) = memtrace_json_ok(&["run", "--combined"], &target);

    assert_eq!(combined["summary"]["outstanding_bytes"], 100 + 200 + 9300);
    // The execing child's 50 bytes died with its old image, in the kernel's sums too.
    assert_eq!(combined["summary"]["dropped_by_exec"], 1);
    assert_eq!(comparable(&combined), comparable(&events));
    let by_exit_code = |report: &Value, code: i64| -> Value {
        let process = report["processes"].as_array().unwrap().iter().find(|p| p["exit_code"] == code).unwrap().clone();
        process["summary"].clone()
    };
    assert_eq!(by_exit_code(&combined, 4), by_exit_code(&events, 4));
    assert_no_probes_left();
}

#[test]
fn combined_counts_every_block_its_table_has_no_room_for() {
    let _serial = serial();
    let crowd = build_c("crowd");
    let (_, events) = memtrace_json_ok(&["run"], &[crowd.to_str().unwrap()]);
    let (_, roomy) = memtrace_json_ok(&["run", "--combined"], &[crowd.to_str().unwrap()]);
    assert_eq!(comparable(&roomy), comparable(&events));
    assert_eq!(roomy["summary"]["total_allocations"], 302);

    // Two slots and room for one block past them: crowd's first 3 blocks are tracked (two in
    // the table, one in the overflow map) and the other 297 counted; their frees are unknown.
    // The 3 tracked blocks are freed from both places, so keep_two's 2 blocks find room again.
    let (output, cramped) = memtrace_json_ok(&["run", "--combined", "--live-blocks", "1"], &[crowd.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "crowd: done\n");
    let summary = &cramped["summary"];
    assert_eq!(summary["lost"]["live_blocks_full"], 297, "{summary:#}");
    assert_eq!(summary["unknown_frees"], 297, "{summary:#}");
    assert_eq!(summary["total_allocations"], 5, "{summary:#}");
    assert_eq!(summary["total_frees"], 3, "{summary:#}");
    assert_eq!(summary["outstanding_bytes"], 200, "{summary:#}");
    assert_eq!(summary["outstanding_allocations"], 2, "{summary:#}");
    let stacks = innermost_functions_and_bytes(&cramped);
    assert_eq!(stacks, [("keep_two", 100), ("keep_two", 100)]);
    // The loss is said on stderr, with the option that avoids it.
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--live-blocks"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_probes_left();
}

/// Within `tolerance` (a fraction) of `expected`.
fn close(actual: &Value, expected: f64, tolerance: f64) -> bool {
    let actual = actual.as_f64().unwrap();
    (actual - expected).abs() <= expected * tolerance
}

#[test]
fn sampling_estimates_what_is_outstanding_from_a_fraction_of_the_blocks() {
    let _serial = serial();
    let sampled = build_c("sampled");
    let (output, report) = memtrace_json_ok(&["run", "--sample-bytes", "65536"], &[sampled.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "sampled: done\n");
    let summary = &report["summary"];
    assert_eq!(summary["collection"], "sampled");
    assert_eq!(summary["estimated"], true);
    assert_eq!(summary["sample_bytes"], 65536);
    assert_eq!(summary["lost_events"], 0);

    // About 195 of the 200,000 small blocks are sampled, so the estimate's standard deviation
    // is about 7%; for the large blocks (each sampled with probability 63%) about 8%. Five
    // standard deviations: a test that fails by chance less than once in a million runs, and
    // that any error in the scaling (a factor of 1,000 for the small blocks) fails.
    let small = stack_from(&report, "hold_small");
    assert!(close(&small["bytes"], 12_800_000.0, 0.35), "{small:#}");
    assert!(close(&small["allocations"], 200_000.0, 0.35), "{small:#}");
    let large = stack_from(&report, "hold_large");
    assert!(close(&large["bytes"], 6_553_600.0, 0.40), "{large:#}");
    assert!(close(&large["allocations"], 100.0, 0.40), "{large:#}");
    // Everything churn allocated was freed: its sampled blocks' frees were all sent.
    assert!(report["stacks"].as_array().unwrap().iter().all(|stack| stack["frames"][0]["function"] != "churn"));
    // 300,100 allocations in all, 25,600,000 + 19,353,600 bytes.
    assert!(close(&summary["total_allocated_bytes"], 25_600_000.0 + 19_353_600.0, 0.25), "{summary:#}");
    assert!(close(&summary["total_allocations"], 300_100.0, 0.35), "{summary:#}");
    assert_no_probes_left();
}

#[test]
fn size_filters_record_only_blocks_in_range() {
    let _serial = serial();
    let leaky = build_c("leaky");
    // 300 to 1000 bytes: leak_with_malloc's 4 x 1000 and leak_with_calloc's 300; not the
    // 5000-byte realloc, nor the 64-163-byte churn.
    let (_, report) = memtrace_json_ok(&["run", "--min-size", "300", "--max-size", "1000"], &[leaky.to_str().unwrap()]);
    let summary = &report["summary"];
    assert_eq!(summary["outstanding_bytes"], 4300);
    assert_eq!(summary["outstanding_allocations"], 5);
    assert_eq!(summary["total_allocations"], 5);
    let stacks = innermost_functions_and_bytes(&report);
    assert_eq!(stacks, [("leak_with_malloc", 4000), ("leak_with_calloc", 300)]);

    let bad = memtrace().args(["run", "--min-size", "10", "--max-size", "5", "--"]).arg(&leaky).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stderr_lines(&bad).len(), 1, "{}", String::from_utf8_lossy(&bad.stderr));
    assert_no_probes_left();
}

#[test]
fn stack_depth_cuts_the_walk() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let (_, report) = memtrace_json_ok(&["run", "--stack-depth", "1"], &[leaky.to_str().unwrap()]);
    assert_eq!(report["summary"]["outstanding_bytes"], 9300);
    for stack in report["stacks"].as_array().unwrap() {
        let functions: Vec<&str> =
            stack["frames"].as_array().unwrap().iter().map(|frame| frame["function"].as_str().unwrap()).collect();
        assert_eq!(functions.len(), 1, "{stack:#}");
        assert!(functions[0].starts_with("leak_with_"), "{stack:#}");
        // Cut at the depth asked for, before the outermost frame: marked.
        assert_eq!(stack["truncated"], true, "{stack:#}");
    }
    let (_, deeper) = memtrace_json(&["run", "--stack-depth", "2"], &[leaky.to_str().unwrap()]);
    assert_eq!(stack_from(&deeper, "leak_with_calloc")["frames"][1]["function"], "main");
    assert_eq!(stack_from(&deeper, "leak_with_calloc")["frames"].as_array().unwrap().len(), 2);
    assert_eq!(stack_from(&deeper, "leak_with_calloc")["truncated"], true);
    // The whole stack, to _start: not truncated.
    let (_, whole) = memtrace_json(&["run"], &[leaky.to_str().unwrap()]);
    assert_eq!(
        stack_from(&whole, "leak_with_calloc")["truncated"],
        false,
        "{:#}",
        stack_from(&whole, "leak_with_calloc")
    );
    assert_no_probes_left();
}

#[test]
fn program_stats_report_each_programs_runs_and_time() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let (_, report) = memtrace_json_ok(&["run", "--program-stats"], &[leaky.to_str().unwrap()]);
    let programs = report["kernel_programs"].as_array().expect("kernel_programs with --program-stats");
    let runs_of = |name: &str| {
        programs.iter().find(|program| program["program"] == name).unwrap_or_else(|| panic!("{name} in {programs:#?}"))
    };
    // Exactly leaky's own calls (the probes are leaky's alone): 107 allocator calls return;
    // 100 frees and one free(NULL) enter free (the block realloc moved away from is realloc's).
    assert_eq!(runs_of("alloc_exit")["runs"], 107);
    assert_eq!(runs_of("free_enter")["runs"], 101);
    assert!(runs_of("alloc_exit")["ns_per_run"].as_f64().unwrap() > 0.0);
    // Without the option there is no such section.
    let (_, plain) = memtrace_json(&["run"], &[leaky.to_str().unwrap()]);
    assert!(plain.get("kernel_programs").is_none());
    assert_no_probes_left();
}
