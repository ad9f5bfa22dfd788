//! The fuzz harnesses: one function per parser memtrace applies to input that other users
//! control, fed arbitrary bytes. None may panic, abort or hang, whatever the bytes.
//!
//! Each fuzz target (`fuzz_targets/NAME.rs`) calls the function of its name, and
//! `memtrace/tests/fuzz_regressions.rs` includes this file to run every input under
//! `fuzz/regressions/NAME/` through it in the ordinary test suite, without the fuzzer. So it
//! uses only crates memtrace itself depends on.
use std::{fs::File, io::Write as _, os::fd::AsRawFd as _, path::PathBuf};

use memtrace::{
    analyze::check::suppressions::{self, Suppressions},
    attach::{allocator, probe_site},
    report::{
        self, Kind, ReportFrame, Stack,
        options::{Format, RenderOptions, SortBy, Weight},
    },
    symbolize::{jitmap::JitMap, module::Module},
    target::maps,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

/// A harness: one input, any bytes.
pub type Harness = fn(&[u8]);

/// Every target: its name (the fuzz binary, the corpus, seeds and regressions folders) and its
/// harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("report", report),
    ("suppressions", suppressions),
    ("perf_map", perf_map),
    ("proc_maps", proc_maps),
    ("elf_symbols", elf_symbols),
    ("elf_allocator", elf_allocator),
    ("probe_site", probe_site),
];

/// `memtrace report FILE`: the bytes parsed as a saved JSON report (what
/// `report::saved::load` does with a file's contents), then rendered in every format, with each
/// weight where the format takes one and both sort orders. (The target's mutator,
/// `fuzz_targets/report.rs`, also sets numbers of a report to [`EDGE_NUMBERS`].)
pub fn report(data: &[u8]) {
    let Ok(report) = serde_json::from_slice::<report::Report>(data) else { return };
    let render = |format, top, weight, sort| {
        let mut out = Vec::new();
        // An error (a renderer refusing the report) is an answer; only a panic is a failure.
        let _ = report::render(&report, &RenderOptions { top, weight, sort, ..RenderOptions::new(format) }, &mut out);
    };
    for sort in [SortBy::Bytes, SortBy::Count] {
        render(Format::Text, None, Weight::Bytes, sort);
    }
    render(Format::Text, Some(1), Weight::Bytes, SortBy::Bytes);
    render(Format::Json, None, Weight::Bytes, SortBy::Bytes);
    render(Format::Junit, None, Weight::Bytes, SortBy::Bytes);
    render(Format::Pprof, None, Weight::Bytes, SortBy::Bytes);
    // JUnit's file and line attributes come from the report's frames.
    let mut out = Vec::new();
    let _ = report::render(
        &report,
        &RenderOptions { junit_locations: true, ..RenderOptions::new(Format::Junit) },
        &mut out,
    );
    for weight in [Weight::Bytes, Weight::Allocations, Weight::Faults] {
        render(Format::Folded, None, weight, SortBy::Bytes);
        render(Format::Svg, Some(2), weight, SortBy::Bytes);
    }
}

/// The numbers a crafted report's fields may be set to: the edges of u32, i64 and u64, and of
/// f64 (as JSON numbers: no NaN or infinity).
pub static EDGE_NUMBERS: std::sync::LazyLock<Vec<serde_json::Value>> = std::sync::LazyLock::new(|| {
    let mut numbers: Vec<serde_json::Value> = [0, 1, u64::from(u32::MAX), u64::from(u32::MAX) + 1]
        .into_iter()
        .chain([i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX])
        .map(serde_json::Value::from)
        .collect();
    numbers.extend([-1i64, i64::MIN].map(serde_json::Value::from));
    numbers.extend([f64::MAX, f64::MIN, f64::MIN_POSITIVE, -0.5, 1e19].map(serde_json::Value::from));
    numbers
});

/// Every number in a JSON value (in serde_json's order: object keys sorted).
pub fn numbers_of<'a>(value: &'a mut serde_json::Value, numbers: &mut Vec<&'a mut serde_json::Value>) {
    match value {
        serde_json::Value::Number(_) => numbers.push(value),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| numbers_of(item, numbers)),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(|field| numbers_of(field, numbers)),
        _ => {}
    }
}

/// `--suppressions FILE`: the text parsed as a suppressions file (read as UTF-8, as
/// `Suppressions::read` does), then every pattern matched against a stack whose frames are
/// named by the input's own lines, so that patterns and names both come from the input.
pub fn suppressions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = Suppressions::parse(text, "fuzz") else { return };
    let frames = text
        .lines()
        .take(16)
        .map(|line| ReportFrame {
            address: "0x1".to_owned(),
            function: Some(line.to_owned()),
            file: Some(line.trim().to_owned()),
            line: None,
            module: Some(line.trim_start_matches("leak:").to_owned()),
            module_offset: None,
            inlined: false,
        })
        .collect();
    let stack = Stack {
        kind: Kind::Heap,
        bytes: 1,
        allocations: 1,
        pid: 1,
        frames,
        unavailable: None,
        truncated: false,
        leak_kind: None,
        suppressed_by: None,
        growth: None,
        total_allocated_bytes: 0,
        total_allocations: 0,
    };
    let _ = parsed.matching(&stack);
    let _ = suppressions::print(&[&stack]);
}

/// `/tmp/perf-PID.map`, written by the traced process: the text parsed (lossily, so that every
/// string is reachable), then looked up at addresses taken from the input; a short map's
/// answers are checked against the obvious quadratic reading of the format (later lines
/// replace the earlier ones they overlap).
pub fn perf_map(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let map = JitMap::parse(&text);
    for address in addresses_in(data).chain([0, u64::MAX]) {
        let _ = map.name_of(address);
    }
    if text.lines().count() > 64 {
        return;
    }
    let mut model: Vec<(u64, u64, String)> = Vec::new();
    for line in text.lines() {
        let mut fields = line.trim().splitn(3, ' ');
        let (Some(start), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let hex = |text: &str| u64::from_str_radix(text.trim_start_matches("0x"), 16).ok();
        let (Some(start), Some(size)) = (hex(start), hex(size)) else { continue };
        let end = start.saturating_add(size);
        if end > start {
            model.retain(|&(other_start, other_end, _)| other_end <= start || other_start >= end);
            model.push((start, end, name.trim().to_owned()));
        }
    }
    let probes = model.iter().flat_map(|&(start, end, _)| [start, end.wrapping_sub(1), end, start.wrapping_sub(1)]);
    for address in probes.chain(addresses_in(data)) {
        let expected =
            model.iter().find(|&&(start, end, _)| (start..end).contains(&address)).map(|(_, _, name)| name.as_str());
        assert_eq!(map.name_of(address), expected, "the name at {address:#x}");
    }
}

/// `/proc/PID/maps`: parsed as `maps::read` does (lossily), each mapping asked what it is, and
/// the mappings classified.
pub fn proc_maps(data: &[u8]) {
    let mappings = maps::parse(&String::from_utf8_lossy(data));
    for mapping in &mappings {
        let _ = mapping.is_file();
        let _ = mapping.contains(mapping.start);
        let _ = mapping.contains(mapping.end.wrapping_sub(1));
        let _ = mapping.map_file(1);
    }
    let kinds = maps::classify(&mappings);
    assert_eq!(kinds.len(), mappings.len(), "one kind per mapping");
}

/// A module of the traced process opened for symbolization (`symbolize::module`: its
/// segments, symbol tables, DWARF through addr2line), then asked for the frames at the
/// addresses of its own symbols and sections and at file offsets through its segments.
pub fn elf_symbols(data: &[u8]) {
    let Some(file) = memory_file(data) else { return };
    // A directory that does not exist: a `.gnu_debuglink` is looked for beside the module.
    let Ok(module) = Module::open(&file, "/nonexistent/memtrace-fuzz/module", &[]) else { return };
    let mut addresses: Vec<u64> = vec![0, 1, u64::MAX];
    if let Ok(elf) = object::File::parse(data) {
        addresses.extend(elf.symbols().chain(elf.dynamic_symbols()).map(|symbol| symbol.address()).take(24));
        addresses.extend(elf.sections().map(|section| section.address()).take(8));
        addresses.extend(elf.segments().map(|segment| segment.file_range().0).take(8));
    }
    for &address in &addresses {
        if let Some(elf_address) = module.address_of(address) {
            let _ = module.frames(elf_address);
        }
        let _ = module.frames(address);
    }
}

/// An object the traced process maps, searched for the allocator functions
/// (`allocator::function_offsets`), and each function's first bytes decoded for its probe, as
/// placing the probes does.
pub fn elf_allocator(data: &[u8]) {
    let Some(file) = memory_file(data) else { return };
    let Ok(offsets) = allocator::function_offsets(&fd_path(&file), "") else { return };
    for &offset in offsets.values() {
        let Some(start) = usize::try_from(offset).ok().filter(|&start| start <= data.len()) else { continue };
        let end = start.saturating_add(probe_site::PROLOGUE_BYTES).min(data.len());
        let _ = probe_site::emulated_probe_point(&data[start..end]);
    }
}

/// A function's first bytes, decoded to place its probe.
pub fn probe_site(data: &[u8]) {
    if let Some(placement) = probe_site::emulated_probe_point(data) {
        let offset = usize::try_from(placement.offset).unwrap_or(usize::MAX);
        assert!(offset < data.len(), "the probe lies inside the bytes decoded");
    }
}

/// The input as an anonymous in-memory file (memfd): the ELF readers open files by path and
/// map them, and `/proc/self/fd/N` names this one without touching a file system.
pub fn memory_file(data: &[u8]) -> Option<File> {
    let fd = nix::sys::memfd::memfd_create(c"memtrace-fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).ok()?;
    let mut file = File::from(fd);
    file.write_all(data).ok()?;
    Some(file)
}

/// The path of an open file through `/proc/self/fd`.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Up to eight addresses read from the input's first bytes.
fn addresses_in(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks_exact(8).take(8).filter_map(|chunk| chunk.try_into().ok()).map(u64::from_le_bytes)
}
