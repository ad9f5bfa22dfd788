//! The inputs that once crashed memtrace's parsers under the fuzzer (`fuzz/regressions/TARGET/`,
//! see `cargo xtask fuzz`), run in the ordinary test suite without the fuzzer: every one through
//! its target's harness (`fuzz/src/lib.rs`, included here as is), and each with the exact
//! outcome of the call that crashed asserted. The committed seeds run through the harnesses too.
#[path = "../../fuzz/src/lib.rs"]
// The report target's mutator uses some of it; these tests do not.
#[allow(dead_code)]
mod harness;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use memtrace::{
    analyze::memory_picture,
    attach::allocator,
    report::{
        self, Report,
        options::{Format, RenderOptions, Weight},
    },
    symbolize::{
        jitmap::JitMap,
        module::{Module, SourceFrame},
    },
    target::maps,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    inputs.sort();
    inputs
}

fn regression(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("regressions").join(target).join(name)).expect("a committed regression input")
}

#[test]
fn every_regression_and_seed_runs_through_its_harness() {
    let mut ran = 0;
    for &(target, harness) in harness::TARGETS {
        for kind in ["regressions", "seeds"] {
            for (name, bytes) in inputs(kind, target) {
                eprintln!("{kind}/{target}/{name}");
                harness(&bytes);
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no input found under {}", fuzz_dir().display());
}

/// `0-8  0 0:0 0 /SYSV`: procfs 0.18 slices bytes 5..13 of a path starting with `/SYSV` and
/// panicked on a shorter one. Such a line is skipped, like one procfs cannot parse.
#[test]
fn proc_maps_sysv_path_too_short_is_skipped() {
    let text = String::from_utf8(regression("proc_maps", "sysv_path_too_short")).unwrap();
    assert_eq!(text, "0-8  0 0:0 0 /SYSV");
    assert!(maps::procfs_would_panic(&text));
    assert_eq!(maps::parse(&text), []);
    // A path of multibyte characters after /SYSV, and one ending `[stack:` on a multibyte one.
    assert_eq!(maps::parse("1000-2000 rw-s 00000000 00:01 7 /SYSVé\n"), []);
    assert_eq!(maps::parse("1000-2000 rw-p 00000000 00:00 0 [stack:é\n"), []);
    // The lines around one skipped still parse, and a real System V segment does.
    let maps = maps::parse(
        "1000-2000 rw-s 00000000 00:01 7 /SYSV0000abcd (deleted)\n0-8  0 0:0 0 /SYSV\n3000-4000 r-xp 00001000 08:01 9 /bin/x\n",
    );
    assert_eq!(maps.len(), 2);
    assert_eq!((maps[0].start, maps[0].path.as_deref(), maps[0].deleted), (0x1000, Some("/SYSV0000abcd"), true));
    assert_eq!((maps[1].start, maps[1].path.as_deref()), (0x3000, Some("/bin/x")));
}

/// The memory picture reads `/proc/PID/smaps` with the same procfs parser, whose mapping lines
/// carry the same paths: one procfs would panic on is refused like one it cannot parse.
#[test]
fn smaps_with_a_sysv_path_too_short_is_refused() {
    let mapping = "1000-3000 rw-p 00000000 00:00 0 [heap]\nSize:                  8 kB\nRss:                   4 kB\n";
    let parsed = memory_picture::parse_smaps(mapping.as_bytes()).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!((parsed[0].address, parsed[0].extension.map.get("Rss")), ((0x1000, 0x3000), Some(&4096)));
    let crafted = format!("{mapping}4000-5000 rw-s 00000000 00:01 7 /SYSV\nRss:                   4 kB\n");
    assert_eq!(
        memory_picture::parse_smaps(crafted.as_bytes()).unwrap_err(),
        "a mapping whose path procfs cannot parse: 4000-5000 rw-s 00000000 00:01 7 /SYSV"
    );
}

/// A 64-byte ELF header and nothing else, asked for the frames at the last address: addr2line
/// looks up [address, address + 1) and overflowed. The symbol tables answer (nothing here).
#[test]
fn elf_symbols_frames_at_the_last_address() {
    let bytes = regression("elf_symbols", "frames_at_last_address");
    assert_eq!(bytes.len(), 64);
    let file = harness::memory_file(&bytes).unwrap();
    let module = Module::open(&file, "/nonexistent/memtrace-fuzz/module", &[]).unwrap();
    assert_eq!(module.frames(u64::MAX), [SourceFrame { function: None, file: None, line: None }]);
    assert_eq!(module.address_of(0), None);
}

/// 108,353 disjoint one-byte functions in 1 MiB: each line was checked against every one kept
/// before it, so this took over ten seconds and the 64 MiB a JIT may write, hours. Each line now
/// costs a logarithm.
#[test]
fn perf_map_of_many_disjoint_lines_parses_in_a_moment() {
    let text = String::from_utf8(regression("perf_map", "disjoint_lines_1mib")).unwrap();
    assert_eq!(text.lines().count(), 108_353);
    let started = std::time::Instant::now();
    let map = JitMap::parse(&text);
    // Tens of milliseconds; the bound leaves room for a loaded machine, not for a square.
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(map.name_of(0), Some("f"));
    assert_eq!(map.name_of(1), None);
    assert_eq!(map.name_of(2 * 108_352), Some("f"));
    assert_eq!(map.name_of(2 * 108_352 + 1), None);
    // Later lines still replace the earlier ones they overlap, and only those.
    let map = JitMap::parse("1000 100 a\n1100 100 b\n1200 100 c\n10f0 20 d\n1300 10 e\n1280 100 f\n");
    let names: Vec<Option<&str>> = [0x1000, 0x10f0, 0x1100, 0x1110, 0x1200, 0x1280, 0x1300, 0x137f, 0x1380]
        .map(|address| map.name_of(address))
        .into();
    // c and e were dropped whole by f, a and b by d.
    assert_eq!(names, [None, Some("d"), Some("d"), None, None, Some("f"), Some("f"), Some("f"), None]);
}

/// An ELF file (552 bytes, made by hand like the 19,296-byte one the elf_allocator fuzz target
/// found, which `cargo fuzz tmin` could not shrink) whose one loadable segment starts at
/// 0xffffffffffffff00 and holds 0x200 bytes, with `malloc` defined at its start: translating
/// that address to a file offset added the segment's start and size, and overflowed. The
/// offset is found without computing the end.
#[test]
fn elf_allocator_segment_end_past_2_64() {
    let bytes = regression("elf_allocator", "segment_end_past_2_64");
    assert_eq!(bytes.len(), 552);
    assert_eq!(offsets(&bytes), [("malloc".to_owned(), 0)].into_iter().collect());
    // The fuzzer's own input: its `malloc` lies in no segment.
    assert_eq!(offsets(&regression("elf_allocator", "fuzzed_segment_end_past_2_64")), HashMap::new());
    // `malloc` 0x10 bytes into a segment whose file offset is 2^64 - 2: the file offset
    // overflowed too. There is none.
    let mut bytes = bytes;
    let (p_offset, st_value) = (64 + 8, 136 + 24 + 8);
    bytes[p_offset..p_offset + 8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    bytes[st_value..st_value + 8].copy_from_slice(&0xffff_ffff_ffff_ff10u64.to_le_bytes());
    assert_eq!(offsets(&bytes), HashMap::new());
}

fn offsets(elf: &[u8]) -> HashMap<String, u64> {
    let file = harness::memory_file(elf).unwrap();
    allocator::function_offsets(&harness::fd_path(&file), "").unwrap()
}

fn saved_report(name: &str) -> Report {
    serde_json::from_slice(&regression("report", name)).expect("a report memtrace report loads")
}

fn render(report: &Report, format: Format, weight: Weight) -> Vec<u8> {
    let mut out = Vec::new();
    report::render(report, &RenderOptions { weight, ..RenderOptions::new(format) }, &mut out).unwrap();
    out
}

/// Two heap stacks of 6000 and 18446744073709551615 bytes: the svg format hands inferno folded
/// lines whose weights it adds up, and inferno's merge overflowed (merge.rs:185). Found by the
/// report fuzz target within seconds of its number mutator.
#[test]
fn report_svg_of_weights_summing_past_2_64() {
    let report = saved_report("svg_weights_sum_past_2_64.json");
    assert_eq!(report.stacks.iter().map(|stack| stack.bytes).collect::<Vec<_>>(), [6000, u64::MAX]);
    let svg = String::from_utf8(render(&report, Format::Svg, Weight::Bytes)).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
}

/// A faulting stack with 3 minor and 18446744073709551615 major faults: `--weight faults`
/// added the two (folded.rs:45).
#[test]
fn report_folded_fault_weight_minor_plus_major_past_2_64() {
    let report = saved_report("fault_weight_minor_plus_major_past_2_64.json");
    let folded = String::from_utf8(render(&report, Format::Folded, Weight::Faults)).unwrap();
    assert_eq!(folded, "[stack unavailable] 18446744073709551615\n");
}

/// Two faulting stacks with the same frames, of 2 and 18446744073709551615 minor faults: the
/// folded format sums the weights of equal paths (folded.rs:50).
#[test]
fn report_folded_faults_of_one_path_past_2_64() {
    let report = saved_report("folded_faults_same_path_past_2_64.json");
    let folded = String::from_utf8(render(&report, Format::Folded, Weight::Faults)).unwrap();
    assert_eq!(
        folded,
        "ld-linux-x86-64.so.2+0x1ab78;_dl_sysdep_start;dl_main;_dl_relocate_object 18446744073709551615\n"
    );
}

/// 2^63 bytes of shared memory and 2^64 - 2 of break growth: the text report added the memory
/// held outside malloc up to decide whether to show it (text/mod.rs:116).
#[test]
fn report_text_outside_malloc_past_2_64() {
    let report = saved_report("text_outside_malloc_sum_past_2_64.json");
    let text = String::from_utf8(render(&report, Format::Text, Weight::Bytes)).unwrap();
    let line = "Outside malloc: 0 bytes mapped, 9,223,372,036,854,775,808 bytes of shared memory, \
                18,446,744,073,709,551,614 bytes of break growth still held";
    assert!(text.lines().any(|shown| shown == line), "{text}");
}
