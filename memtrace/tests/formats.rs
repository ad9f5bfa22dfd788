//! Output formats, each checked by a real consumer: folded stacks rendered by inferno, the SVG
//! parsed as XML, pprof decoded by the Python protobuf package, JSON validated against its
//! schema by Python's jsonschema, and a saved JSON report rendered again by `memtrace report`.
//! The traced program is tests/programs/leaky.c, whose allocations are known exactly.
mod common;

use std::{
    path::Path,
    process::{Command, Output},
};

use common::*;
use serde_json::Value;

/// Runs `memtrace run` on leaky with `args`, the report written to `out`.
fn run_leaky(args: &[&str], out: &Path) -> Output {
    run_leaky_through(memtrace(), args, out)
}

/// `command` (memtrace, or a wrapper that runs it) given `run ARGS -o OUT -- leaky`.
fn run_leaky_through(mut command: Command, args: &[&str], out: &Path) -> Output {
    let leaky = build_c("leaky");
    let output =
        command.arg("run").args(args).arg("-o").arg(out).arg("--").arg(&leaky).output().expect("memtrace runs");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `memtrace report` with `args`; asserts it succeeded and returns its stdout.
fn rerender(args: &[&str]) -> Vec<u8> {
    let output = memtrace().arg("report").args(args).output().expect("memtrace report runs");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Checks that `svg` is well-formed XML, reading every event with quick-xml.
fn assert_well_formed(svg: &str) {
    let mut reader = quick_xml::Reader::from_str(svg);
    reader.config_mut().check_end_names = true;
    let mut depth = 0i64;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(error) => panic!("not well-formed XML at {}: {error}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "unbalanced elements");
}

#[test]
fn folded_stacks_weigh_bytes_or_allocations_and_inferno_draws_them() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bytes_path = dir.path().join("bytes.folded");
    run_leaky(&["--format", "folded"], &bytes_path);
    let folded = std::fs::read_to_string(&bytes_path).unwrap();
    // Root first, the leaking function last, then the weight; libc's frames below main
    // (no frame pointers) appear as module+offset or not at all, so only the end is exact.
    let mut lines: Vec<&str> = folded.lines().collect();
    lines.sort_by_key(|line| line.rsplit_once(' ').map(|(path, _)| path.rsplit(';').next().unwrap().to_owned()));
    assert_eq!(lines.len(), 3, "{folded}");
    assert!(lines[0].ends_with(";main;leak_with_calloc 300"), "{folded}");
    assert!(lines[1].ends_with(";main;leak_with_malloc 4000"), "{folded}");
    assert!(lines[2].ends_with(";main;leak_with_realloc 5000"), "{folded}");

    let counts_path = dir.path().join("allocations.folded");
    run_leaky(&["--format", "folded", "--weight", "allocations"], &counts_path);
    let counts = std::fs::read_to_string(&counts_path).unwrap();
    let weights: Vec<(String, u64)> = counts
        .lines()
        .map(|line| {
            let (path, weight) = line.rsplit_once(' ').unwrap();
            (path.rsplit(';').next().unwrap().to_owned(), weight.parse().unwrap())
        })
        .collect();
    let mut weights = weights;
    weights.sort();
    assert_eq!(
        weights,
        [("leak_with_calloc".to_owned(), 1), ("leak_with_malloc".to_owned(), 4), ("leak_with_realloc".to_owned(), 1)]
    );

    // inferno, the flamegraph library, reads the folded file as it is.
    let mut options = inferno::flamegraph::Options::default();
    let mut svg = Vec::new();
    inferno::flamegraph::from_files(&mut options, &[bytes_path], &mut svg).expect("inferno reads the folded stacks");
    let svg = String::from_utf8(svg).unwrap();
    assert_well_formed(&svg);
    for function in ["leak_with_malloc", "leak_with_calloc", "leak_with_realloc", "main"] {
        assert!(svg.contains(&format!("<title>{function} (")), "{function} missing from the flamegraph");
    }
    // 9300 bytes in all, as inferno counts them.
    assert!(svg.contains("<title>all (9,300 samples, 100%)</title>"), "{svg}");
    assert_no_probes_left();
}

#[test]
fn svg_flamegraph_is_well_formed_and_titled_with_command_and_totals() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.svg");
    run_leaky(&["--format", "svg"], &path);
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_well_formed(&svg);
    let leaky = build_c("leaky");
    assert!(svg.contains(&format!("memtrace: {}", leaky.display())), "no title with the command");
    assert!(
        svg.contains("9300 bytes in 6 allocations outstanding from 3 stacks"),
        "no totals in the subtitle: {}",
        &svg[..svg.len().min(3000)]
    );
    assert!(svg.contains("<title>leak_with_realloc (5,000 bytes, "), "leak_with_realloc's cell is missing");
    assert!(svg.contains("<title>all (9,300 bytes, 100%)</title>"));
    assert_no_probes_left();
}

fn leaf_function(sample: &Value) -> &str {
    sample["locations"][0]["lines"][0]["function"].as_str().unwrap_or("??")
}

fn hex(text: &Value) -> u64 {
    u64::from_str_radix(text.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn pprof_decodes_independently_with_the_json_numbers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // One recording, saved as JSON, rendered as pprof by `memtrace report`: the profile's
    // samples must be the JSON's stacks, number for number, address for address.
    let json_path = dir.path().join("leaky.json");
    run_leaky(&["--format", "json"], &json_path);
    // The JSON is what docs/report.schema.json says, by an independent validator.
    assert_matches_schema(&json_path);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let pprof_path = dir.path().join("leaky.pb.gz");
    rerender(&[json_path.to_str().unwrap(), "--format", "pprof", "-o", pprof_path.to_str().unwrap()]);
    let profile = decode_pprof(&pprof_path, dir.path());

    assert_eq!(
        profile["sample_types"],
        serde_json::json!([
            ["alloc_objects", "count"],
            ["alloc_space", "bytes"],
            ["inuse_objects", "count"],
            ["inuse_space", "bytes"]
        ])
    );
    assert_eq!(profile["default_sample_type"], "inuse_space");
    let samples = profile["samples"].as_array().unwrap();
    let stacks: Vec<&Value> =
        report["stacks"].as_array().unwrap().iter().chain(report["released_stacks"].as_array().unwrap()).collect();
    assert_eq!(samples.len(), stacks.len());
    // The JSON's own totals: the outstanding stacks and the released ones (churn, and the
    // block realloc replaced).
    assert_eq!(stacks.len(), 5, "{report:#}");
    let allocated: u64 = stacks.iter().map(|stack| stack["total_allocated_bytes"].as_u64().unwrap()).sum();
    assert_eq!(report["summary"]["total_allocated_bytes"], allocated);
    let released = report["released_stacks"].as_array().unwrap();
    assert!(released.iter().all(|stack| stack["bytes"] == 0 && stack["allocations"] == 0), "{report:#}");
    for (sample, stack) in samples.iter().zip(&stacks) {
        let values: Vec<u64> = sample["values"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let expected: Vec<u64> = ["total_allocations", "total_allocated_bytes", "allocations", "bytes"]
            .iter()
            .map(|field| stack[field].as_u64().unwrap())
            .collect();
        assert_eq!(values, expected, "{stack:#}");
        assert_eq!(sample["labels"]["pid"], report["target"]["pid"]);
        // Each non-inlined frame is one location, at the frame's address.
        let addresses: Vec<u64> =
            sample["locations"].as_array().unwrap().iter().map(|l| l["address"].as_u64().unwrap()).collect();
        let frames: Vec<u64> = stack["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|frame| frame["inlined"] == false)
            .map(|frame| hex(&frame["address"]))
            .collect();
        assert_eq!(addresses, frames);
    }

    // The numbers themselves, as leaky.c makes them.
    let by_leaf = |function: &str, inuse: u64| {
        samples
            .iter()
            .find(|sample| leaf_function(sample) == function && sample["values"][3] == inuse)
            .unwrap_or_else(|| panic!("no sample from {function} holding {inuse}: {profile:#}"))
    };
    assert_eq!(by_leaf("leak_with_malloc", 4000)["values"], serde_json::json!([4, 4000, 4, 4000]));
    assert_eq!(by_leaf("leak_with_calloc", 300)["values"], serde_json::json!([1, 300, 1, 300]));
    assert_eq!(by_leaf("leak_with_realloc", 5000)["values"], serde_json::json!([1, 5000, 1, 5000]));
    // Fully freed stacks still count for alloc_*: the 50-byte block realloc replaced, and
    // churn's 100 blocks of 64..163 bytes.
    assert_eq!(by_leaf("leak_with_realloc", 0)["values"], serde_json::json!([1, 50, 0, 0]));
    assert_eq!(by_leaf("churn", 0)["values"], serde_json::json!([100, (64..164).sum::<u64>(), 0, 0]));
    // File and line through the location's line and its function, the binary as mapping.
    let leaf = &by_leaf("leak_with_malloc", 4000)["locations"][0];
    assert_eq!(leaf["lines"][0]["line"], line_of("leaky", "malloc(1000)"));
    assert_eq!(leaf["lines"][0]["file"], source_path("leaky.c"));
    assert_eq!(leaf["mapping"], build_c("leaky").to_str().unwrap());
    assert_no_probes_left();
}

/// Runs leaky with `args` and `--format pprof`; the decoded samples as (leaf function, values),
/// sorted.
fn live_pprof_samples(args: &[&str]) -> Vec<(String, Vec<u64>)> {
    let dir = tempfile::tempdir().unwrap();
    let pprof_path = dir.path().join("live.pb.gz");
    let mut all = args.to_vec();
    all.extend(["--format", "pprof"]);
    run_leaky(&all, &pprof_path);
    let profile = decode_pprof(&pprof_path, dir.path());
    let mut values: Vec<(String, Vec<u64>)> = profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| {
            let values = sample["values"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            (leaf_function(sample).to_owned(), values)
        })
        .collect();
    values.sort();
    values
}

/// What leaky allocates and holds, per stack, as pprof's four values.
fn leaky_samples() -> Vec<(String, Vec<u64>)> {
    let churned = (64..164).sum::<u64>();
    vec![
        ("churn".to_owned(), vec![100, churned, 0, 0]),
        ("leak_with_calloc".to_owned(), vec![1, 300, 1, 300]),
        ("leak_with_malloc".to_owned(), vec![4, 4000, 4, 4000]),
        ("leak_with_realloc".to_owned(), vec![1, 50, 0, 0]),
        ("leak_with_realloc".to_owned(), vec![1, 5000, 1, 5000]),
    ]
}

#[test]
fn pprof_written_live_has_the_same_samples() {
    let _serial = serial();
    assert_eq!(live_pprof_samples(&[]), leaky_samples());
    assert_no_probes_left();
}

#[test]
fn pprof_from_sums_made_in_the_kernel_has_the_same_samples() {
    let _serial = serial();
    // --combined: the kernel adds up each stack's allocations; fully freed stacks included.
    assert_eq!(live_pprof_samples(&["--combined"]), leaky_samples());
    assert_no_probes_left();
}

/// Runs memtrace with address-space randomization off (`setarch -R`, inherited by the
/// target), so that two runs of leaky have the same code addresses.
fn run_leaky_fixed(args: &[&str], out: &Path) {
    let mut setarch = Command::new("setarch");
    setarch.args(["x86_64", "-R"]).arg(memtrace_bin());
    run_leaky_through(setarch, args, out);
}

/// The text with what differs between two runs of one program blanked out: pids, the
/// duration, and the memory picture's figures (the cgroup's usage moves between runs).
fn without_run_identity(text: &str) -> String {
    let mut out = String::new();
    let mut in_memory_picture = false;
    for line in text.lines() {
        if line.starts_with("Memory of pid") {
            in_memory_picture = true;
            out.push_str("Memory of pid N\n");
        }
        if in_memory_picture {
            if line.is_empty() {
                in_memory_picture = false;
            } else {
                continue;
            }
        }
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        for index in 1..words.len() {
            if words[index - 1] == "pid" || words[index - 1] == "(pid" || words[index - 1] == "for" {
                words[index] = "N".to_owned() + if words[index].ends_with(')') { ")" } else { "" };
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn saved_json_rerenders_as_the_live_text_report() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let live_text = dir.path().join("live.txt");
    run_leaky_fixed(&[], &live_text);
    let json_path = dir.path().join("saved.json");
    run_leaky_fixed(&["--format", "json"], &json_path);
    let rendered = String::from_utf8(rerender(&[json_path.to_str().unwrap()])).unwrap();
    let live = std::fs::read_to_string(&live_text).unwrap();
    assert!(live.contains("leak_with_malloc at"), "{live}");
    assert_eq!(without_run_identity(&rendered), without_run_identity(&live));
    // And rendered again as JSON, the report is the one saved.
    let again: Value = serde_json::from_slice(&rerender(&[json_path.to_str().unwrap(), "--format", "json"])).unwrap();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(again, saved);

    // pprof is binary: not written to a terminal (python's pty module runs memtrace on one).
    let output = Command::new("/usr/bin/python3")
        .args(["-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)"])
        .arg(memtrace_bin())
        .args(["report", json_path.to_str().unwrap(), "--format", "pprof"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        "memtrace: error: cannot write the report to stdout: it is a terminal and this format is binary: give -o FILE"
    );
    assert_no_probes_left();
}

#[test]
fn report_of_a_missing_or_corrupt_file_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let output = memtrace().arg("report").arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&output),
        [format!("memtrace: error: cannot read {}: No such file or directory (os error 2)", missing.display())]
    );

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"memtrace_version\": \"0.1.0\", \"mode\": ").unwrap();
    let output = memtrace().arg("report").arg(&corrupt).args(["--format", "svg"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("memtrace: error: {} is not a memtrace JSON report (", corrupt.display())),
        "{lines:?}"
    );
    assert!(output.stdout.is_empty());

    // An empty file is no report either.
    let report = dir.path().join("empty.json");
    std::fs::write(&report, "").unwrap();
    let output = memtrace().arg("report").arg(&report).args(["-o", "/nonexistent/dir/out.svg"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr_lines(&output).len(), 1);
}

#[test]
fn a_program_that_frees_everything_gets_an_empty_but_valid_flamegraph() {
    let _serial = serial();
    let clean = build_c("clean");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.svg");
    let output = memtrace().args(["run", "--format", "svg", "-o"]).arg(&path).arg("--").arg(&clean).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stderr_lines(&output), ["memtrace: no stack holds memory: the flamegraph is empty"]);
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_well_formed(&svg);
    assert_no_probes_left();
}

#[test]
fn pprof_keeps_an_inline_chain_as_one_location_with_several_lines() {
    let _serial = serial();
    let binary = build("inlined.c", "cc", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlined.pb.gz");
    let output =
        memtrace().args(["run", "--format", "pprof", "-o"]).arg(&path).arg("--").arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let profile = decode_pprof(&path, dir.path());
    let sample = profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sample| leaf_function(sample) == "grab")
        .unwrap_or_else(|| panic!("no sample from grab: {profile:#}"));
    assert_eq!(sample["values"], serde_json::json!([1, 777, 1, 777]));
    // grab inlined into build_table: one address, two lines, innermost first; then main.
    let lines = |index: usize| -> Vec<(String, u64)> {
        sample["locations"][index]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| (line["function"].as_str().unwrap().to_owned(), line["line"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(
        lines(0),
        [
            ("grab".to_owned(), line_of("inlined", "return malloc(size)")),
            ("build_table".to_owned(), line_of("inlined", "sink = grab(777)")),
        ]
    );
    assert_eq!(lines(1), [("main".to_owned(), line_of("inlined", "build_table();"))]);
    assert_no_probes_left();
}

/// Runs tests/programs/shop.cpp under `memtrace run` with a JSON report in `dir`; the report's
/// path and value.
fn shop_report(dir: &Path) -> (std::path::PathBuf, Value) {
    let shop = build("shop.cpp", "g++", &["-O0", "-g", "-fno-omit-frame-pointer"]);
    let json = dir.join("shop.json");
    let output = memtrace().args(["run", "--format", "json", "-o"]).arg(&json).arg("--").arg(&shop).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_matches_schema(&json);
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (json, report)
}

/// (leak kind, bytes, allocations, total allocated bytes, total allocations) of the stacks whose
/// innermost frame is `function` at `line` of shop.cpp.
fn shop_stacks(report: &Value, function: &str, line: u64) -> Vec<(String, u64, u64, u64, u64)> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stack| {
            let frames = stack["frames"].as_array().unwrap();
            frames
                .iter()
                .find(|frame| frame["file"] == source_path("shop.cpp"))
                .is_some_and(|frame| frame["function"] == function && frame["line"] == line)
        })
        .map(|stack| {
            let number = |field: &str| stack[field].as_u64().unwrap();
            (
                stack["leak_kind"].as_str().unwrap().to_owned(),
                number("bytes"),
                number("allocations"),
                number("total_allocated_bytes"),
                number("total_allocations"),
            )
        })
        .collect()
}

#[test]
fn totals_add_up_when_a_stack_holds_blocks_of_two_leak_kinds() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (json, report) = shop_report(dir.path());
    // shop::OrderBook::add's 900 orders: 300 kept (still reachable), 300 deleted, 300 lost, all
    // from one stack, listed once per kind. The first kind takes what the stack freed.
    let add = "shop::OrderBook::add(int)";
    assert_eq!(
        shop_stacks(&report, add, line_of("shop.cpp", "new Order{id, {}}")),
        [("definitely_lost".to_owned(), 9600, 300, 19200, 600), ("still_reachable".to_owned(), 9600, 300, 9600, 300)]
    );
    // Their quantities' arrays (4, 8 and 16 bytes each, the first two freed): 2,700 allocations.
    assert_eq!(
        shop_stacks(&report, add, line_of("shop.cpp", "push_back(quantity)")),
        [("indirectly_lost".to_owned(), 4800, 300, 20400, 2400), ("still_reachable".to_owned(), 4800, 300, 4800, 300)]
    );
    // No stack allocated less than it holds.
    let all: Vec<&Value> =
        report["stacks"].as_array().unwrap().iter().chain(report["released_stacks"].as_array().unwrap()).collect();
    for stack in &all {
        let number = |field: &str| stack[field].as_u64().unwrap();
        assert!(
            number("total_allocated_bytes") >= number("bytes") && number("total_allocations") >= number("allocations"),
            "{stack:#}"
        );
    }
    // pprof, read by the real pprof: alloc_objects and alloc_space add up to the summary's totals
    // (900 orders, 2,700 arrays, the book, its reserve, libstdc++'s emergency pool).
    let profile = dir.path().join("shop.pb.gz");
    rerender(&[json.to_str().unwrap(), "--format", "pprof", "-o", profile.to_str().unwrap()]);
    let samples = go_pprof_samples(&profile, &[]);
    assert_eq!(samples.len(), all.len());
    assert!(samples.iter().all(|sample| sample.labels["kind"] == "heap"), "{samples:?}");
    let sum = |samples: &[RawSample], index: usize| samples.iter().map(|sample| sample.values[index]).sum::<u64>();
    let summary = &report["summary"];
    assert_eq!(sum(&samples, 0), summary["total_allocations"].as_u64().unwrap());
    assert_eq!(sum(&samples, 1), summary["total_allocated_bytes"].as_u64().unwrap());
    assert_eq!(sum(&samples, 0), 3603);
    assert_eq!(sum(&samples, 3), summary["outstanding_bytes"].as_u64().unwrap());
    // Each sample's leak kind is a label: -tagfocus keeps one kind.
    let lost = go_pprof_samples(&profile, &["-tagfocus=leak_kind=definitely_lost"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].values, [600, 19200, 300, 9600]);
    assert_eq!(
        (lost[0].labels["leak_kind"].as_str(), lost[0].labels["suppressed"].as_str()),
        ("definitely_lost", "false")
    );
    assert_eq!(sum(&lost, 3), summary["definitely_lost_bytes"].as_u64().unwrap());
    let reachable = go_pprof_samples(&profile, &["-tagfocus=leak_kind=still_reachable"]);
    assert_eq!(sum(&reachable, 3), summary["still_reachable_bytes"].as_u64().unwrap());
    // And whether a suppression matched it: both entries of add's stack, suppressed again.
    let suppressions = dir.path().join("shop.supp");
    std::fs::write(&suppressions, "leak:shop::OrderBook::add\n").unwrap();
    rerender(&[
        json.to_str().unwrap(),
        "--suppressions",
        suppressions.to_str().unwrap(),
        "--format",
        "pprof",
        "-o",
        profile.to_str().unwrap(),
    ]);
    let suppressed = go_pprof_samples(&profile, &["-tagfocus=suppressed=true"]);
    let values: Vec<&[u64]> = suppressed.iter().map(|sample| &sample.values[..]).collect();
    assert_eq!(values.len(), 4, "{suppressed:?}");
    assert!(
        values.contains(&&[600, 19200, 300, 9600][..]) && values.contains(&&[300, 9600, 300, 9600][..]),
        "{suppressed:?}"
    );
    assert_no_probes_left();
}

/// The text of the `<rect>` fill after the title of `cell` in an inferno SVG.
fn cell_fill<'a>(svg: &'a str, cell: &str) -> &'a str {
    let title = svg.find(&format!("<title>{cell} (")).unwrap_or_else(|| panic!("no cell {cell} in the flamegraph"));
    let fill = &svg[title..][svg[title..].find("fill=\"").unwrap() + 6..];
    &fill[..fill.find('"').unwrap()]
}

#[test]
fn folded_svg_and_pprof_keep_leak_kinds_apart_and_kinds_chooses_them() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = shop_report(dir.path());
    let json = json.to_str().unwrap();
    let folded = String::from_utf8(rerender(&[json, "--format", "folded"])).unwrap();
    let lines: Vec<&str> = folded.lines().collect();
    // Each leak kind is a root of its own; frames are named without parameters or templates.
    let ending = |kind: &str, end: &str| {
        lines.iter().filter(|line| line.starts_with(&format!("[{kind}];")) && line.ends_with(end)).count()
    };
    assert_eq!(ending("definitely lost", ";main;shop::OrderBook::add 9600"), 1, "{folded}");
    assert_eq!(ending("still reachable", ";main;shop::OrderBook::add 9600"), 1, "{folded}");
    let vector = ";main;shop::OrderBook::add;std::vector::push_back;std::vector::_M_realloc_insert;std::_Vector_base::_M_allocate;std::allocator_traits::allocate;std::__new_allocator::allocate 4800";
    assert_eq!(ending("indirectly lost", vector), 1, "{folded}");
    assert_eq!(ending("still reachable", vector), 1, "{folded}");
    for line in &lines {
        let (path, _) = line.rsplit_once(' ').unwrap();
        for frame in path.split(';').skip(1) {
            assert!(!frame.contains('(') && !frame.contains('<'), "{frame:?} in {line}");
        }
    }
    // --kinds: only those kinds (the other formats alike).
    let definite = String::from_utf8(rerender(&[json, "--format", "folded", "--kinds", "definite"])).unwrap();
    assert_eq!(definite.lines().count(), 1, "{definite}");
    assert!(
        definite.starts_with("[definitely lost];") && definite.ends_with(";main;shop::OrderBook::add 9600\n"),
        "{definite}"
    );
    let text = String::from_utf8(rerender(&[json, "--kinds", "definite,indirect"])).unwrap();
    assert!(
        text.contains("\nShowing definitely lost, indirectly lost (--kinds); 5 stacks of other kinds left out\n"),
        "{text}"
    );
    assert!(text.contains("\nDefinitely lost:\n#1: 9,600 bytes in 300 allocations (pid "), "{text}");
    assert!(text.contains("\nIndirectly lost:\n#2: 4,800 bytes in 300 allocations (pid "), "{text}");
    assert!(!text.contains("Still reachable:") && !text.contains("#3:"), "{text}");
    let profile = dir.path().join("definite.pb.gz");
    rerender(&[json, "--format", "pprof", "--kinds", "definite", "-o", profile.to_str().unwrap()]);
    let samples = go_pprof_samples(&profile, &[]);
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].labels["leak_kind"], "definitely_lost");
    // The flamegraph: each kind's root cell in its colour, drawn by inferno.
    let svg = String::from_utf8(rerender(&[json, "--format", "svg"])).unwrap();
    assert_well_formed(&svg);
    assert_eq!(cell_fill(&svg, "[definitely lost]"), "rgb(215,48,39)");
    assert_eq!(cell_fill(&svg, "[indirectly lost]"), "rgb(244,130,50)");
    assert_eq!(cell_fill(&svg, "[still reachable]"), "rgb(90,140,210)");
    assert!(svg.contains("<title>shop::OrderBook::add ("), "{}", &svg[..svg.len().min(2000)]);
    assert!(!svg.contains("OrderBook::add(int)"), "full names in the flamegraph");
    // JSON keeps the full names.
    let report: Value = serde_json::from_slice(&rerender(&[json, "--format", "json", "--kinds", "definite"])).unwrap();
    assert_eq!(report["stacks"].as_array().unwrap().len(), 7);
    assert!(
        report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|stack| stack["frames"][0]["function"] == "shop::OrderBook::add(int)")
    );
    assert_no_probes_left();
}
