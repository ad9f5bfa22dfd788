//! pprof: a gzipped profile.proto with what each stack holds at the end (`inuse_space`,
//! `inuse_objects`) and everything it allocated during the trace (`alloc_space`,
//! `alloc_objects`), with functions, locations (inline chains as several lines of one
//! location), lines and mappings, so that pprof, Pyroscope, Grafana and speedscope show
//! function, file and line. Each sample is labelled with its process (`pid`), the kind of memory
//! (`kind`), its leak kind when its process was scanned (`leak_kind`, so that `go tool pprof
//! -tagfocus=leak_kind=definitely_lost` keeps only those) and whether a suppression matched it
//! (`suppressed`).
use std::{
    collections::HashMap,
    io::{self, Write},
};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::{
    Report, ReportFrame,
    profile_proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType},
};

/// The sample types, in the order of every sample's values (Go's heap profiles use this order).
pub const SAMPLE_TYPES: [(&str, &str); 4] =
    [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")];

/// With `--faults`, two more, after those: each faulting stack is a sample of its own with
/// zeros for the four above, and each allocating stack has zeros for these.
pub const FAULT_SAMPLE_TYPES: [(&str, &str); 2] = [("minor_faults", "count"), ("major_faults", "count")];

/// Writes the profile of `report`'s first `top` stacks (all without it) and its released ones.
pub fn render(report: &Report, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let profile = build(report, top);
    let mut gzip = GzEncoder::new(out, Compression::default());
    gzip.write_all(&profile.encode_to_vec())?;
    gzip.finish()?;
    Ok(())
}

pub fn build(report: &Report, top: Option<usize>) -> Profile {
    let mut builder = Builder::default();
    builder.string(""); // index 0 is the empty string
    let with_faults = report.faults.is_some();
    let fault_types: &[(&str, &str)] = if with_faults { &FAULT_SAMPLE_TYPES } else { &[] };
    let sample_type = SAMPLE_TYPES
        .iter()
        .chain(fault_types)
        .map(|(kind, unit)| ValueType { r#type: builder.string(kind), unit: builder.string(unit) })
        .collect();
    let mut samples: Vec<Sample> = report
        .stacks
        .iter()
        .take(top.unwrap_or(usize::MAX))
        .chain(&report.released_stacks)
        .map(|stack| {
            let mut values = vec![
                signed(stack.total_allocations),
                signed(stack.total_allocated_bytes),
                signed(stack.allocations),
                signed(stack.bytes),
            ];
            if with_faults {
                values.extend([0, 0]);
            }
            let kind = stack.kind.name();
            let mut labels = vec![("kind", kind)];
            if let Some(leak) = stack.leak_kind {
                labels.push(("leak_kind", leak.name()));
            }
            labels.push(("suppressed", if stack.suppressed_by.is_some() { "true" } else { "false" }));
            builder.sample(stack.pid, &stack.frames, &labels, values)
        })
        .collect();
    for stack in report.faults.iter().flat_map(|faults| &faults.stacks) {
        let values = vec![0, 0, 0, 0, signed(stack.minor), signed(stack.major)];
        samples.push(builder.sample(stack.pid, &stack.frames, &[("kind", "fault")], values));
    }
    let comment = vec![
        builder.string(&format!("memtrace {}", report.memtrace_version)),
        builder.string(&report.target.command.join(" ")),
    ];
    let period_type = Some(ValueType { r#type: builder.string("space"), unit: builder.string("bytes") });
    let default_sample_type = builder.string("inuse_space");
    let mut mappings: Vec<Mapping> = builder.mappings.into_values().collect();
    mappings.sort_by_key(|mapping| mapping.id);
    Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings,
        time_nanos: 0,
        // A float cast saturates (and takes NaN to 0); a negative duration is none.
        duration_nanos: (report.duration_seconds * 1e9).max(0.0) as i64,
        period_type,
        period: 1,
        comment,
        default_sample_type,
    }
}

/// Interns strings, functions, mappings and locations, each given an id on first sight.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    /// By (pid, module path, load base).
    mappings: HashMap<(u32, String, u64), Mapping>,
    locations: Vec<Location>,
    location_ids: HashMap<(u32, u64), u64>,
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(text.to_owned());
        self.string_ids.insert(text.to_owned(), id);
        id
    }

    /// One sample: a stack (innermost frame first) of process `pid`, labelled with its pid and
    /// `labels` (the kind of memory or `fault`, ...).
    fn sample(&mut self, pid: u32, frames: &[ReportFrame], labels: &[(&str, &str)], value: Vec<i64>) -> Sample {
        let mut location_id = Vec::new();
        // A location ends at a frame that was not inlined: the frames before it (same address)
        // were inlined into it.
        let mut chain: Vec<&ReportFrame> = Vec::new();
        for frame in frames {
            chain.push(frame);
            if !frame.inlined {
                location_id.push(self.location(pid, &chain));
                chain.clear();
            }
        }
        if !chain.is_empty() {
            location_id.push(self.location(pid, &chain));
        }
        if frames.is_empty() {
            location_id.push(self.pseudo_location("[stack unavailable]"));
        }
        let mut label = vec![Label { key: self.string("pid"), num: i64::from(pid), ..Label::default() }];
        for (key, value) in labels {
            label.push(Label { key: self.string(key), str: self.string(value), ..Label::default() });
        }
        Sample { location_id, value, label }
    }

    /// The location of one address: its inline chain, innermost first, as lines.
    fn location(&mut self, pid: u32, chain: &[&ReportFrame]) -> u64 {
        let Some(outer) = chain.last() else { return 0 };
        let address = parse_hex(&outer.address);
        if let Some(&id) = self.location_ids.get(&(pid, address)) {
            return id;
        }
        let line = chain
            .iter()
            .filter_map(|frame| {
                let function = frame.function.as_deref()?;
                let function_id = self.function(function, frame.file.as_deref());
                Some(Line { function_id, line: frame.line.map_or(0, i64::from) })
            })
            .collect();
        let mapping_id = self.mapping(pid, address, chain);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location { id, mapping_id, address, line });
        self.location_ids.insert((pid, address), id);
        id
    }

    /// A location that stands for something other than code (a stack that was not captured).
    fn pseudo_location(&mut self, name: &str) -> u64 {
        let function_id = self.function(name, None);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location { id, mapping_id: 0, address: 0, line: vec![Line { function_id, line: 0 }] });
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_owned(), file.map(str::to_owned));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.string(name);
        let filename = file.map_or(0, |file| self.string(file));
        self.functions.push(Function { id, name, system_name: name, filename });
        self.function_ids.insert(key, id);
        id
    }

    /// The mapping of the module a frame is in, grown to cover `address`. The report keeps each
    /// frame's offset in its file, so the load base (address minus offset) identifies it.
    fn mapping(&mut self, pid: u32, address: u64, chain: &[&ReportFrame]) -> u64 {
        let Some(outer) = chain.last() else { return 0 };
        let (Some(module), Some(offset)) = (&outer.module, &outer.module_offset) else { return 0 };
        let base = address.saturating_sub(parse_hex(offset));
        let next_id = self.mappings.len() as u64 + 1;
        let filename = self.string(module);
        let mapping = self.mappings.entry((pid, module.clone(), base)).or_insert_with(|| Mapping {
            id: next_id,
            memory_start: base,
            memory_limit: address.saturating_add(1),
            file_offset: 0,
            filename,
            ..Mapping::default()
        });
        mapping.memory_limit = mapping.memory_limit.max(address.saturating_add(1));
        mapping.has_functions |= chain.iter().any(|frame| frame.function.is_some());
        mapping.has_filenames |= chain.iter().any(|frame| frame.file.is_some());
        mapping.has_line_numbers |= chain.iter().any(|frame| frame.line.is_some());
        mapping.has_inline_frames |= chain.len() > 1;
        mapping.id
    }
}

/// profile.proto's values are signed: a count beyond i64::MAX (only a crafted report has one)
/// is i64::MAX, not negative.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn parse_hex(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap_or(0)
}
