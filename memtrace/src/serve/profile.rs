//! `/debug/pprof/heap` and `/debug/pprof/allocs` as Go's runtime serves them: the report's pprof
//! (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`) with the time it was taken,
//! the sampling period, and each mapping's build ID, so that pprof, Parca and Pyroscope find
//! the debug info; `allocs` differs only in its default sample type. With `?seconds=N`, a delta
//! profile: each stack's values at the end of the N seconds minus those at their start, so
//! that it holds what was allocated (and what was freed) in between.
use std::{collections::HashMap, io::Write};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::{Selection, Snapshot};
use crate::report::{
    pprof,
    profile_proto::{Profile, Sample},
};

#[derive(Debug, Clone, Copy)]
pub enum SampleKind {
    /// `inuse_space` first, as `/debug/pprof/heap`.
    Heap,
    /// `alloc_space` first, as `/debug/pprof/allocs`.
    Allocs,
}

/// The gzipped profile of the selected processes in `after`, less what they had in `before`
/// when it is given.
pub fn encode(after: &Snapshot, before: Option<&Snapshot>, selection: &Selection, kind: SampleKind) -> Vec<u8> {
    let mut profile = build(after, selection, kind);
    if let Some(before) = before {
        subtract(&mut profile, &build(before, selection, kind));
        profile.time_nanos = before.taken_unix_ns;
        profile.duration_nanos = after.taken_unix_ns.saturating_sub(before.taken_unix_ns);
    }
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gzip.write_all(&profile.encode_to_vec());
    gzip.finish().unwrap_or_default()
}

fn build(snapshot: &Snapshot, selection: &Selection, kind: SampleKind) -> Profile {
    let selected = selection.apply(snapshot);
    let mut profile = pprof::build(&selected, None);
    if let [process] = selected.processes.as_slice() {
        executable_first(&mut profile, snapshot.executable(process.pid));
    }
    profile.time_nanos = snapshot.taken_unix_ns;
    profile.period = i64::try_from(snapshot.sample_period).unwrap_or(i64::MAX);
    let default_type = match kind {
        SampleKind::Heap => "inuse_space",
        SampleKind::Allocs => "alloc_space",
    };
    profile.default_sample_type = intern(&mut profile.string_table, default_type);
    for index in 0..profile.mapping.len() {
        let filename = usize::try_from(profile.mapping[index].filename).unwrap_or(0);
        let build_id: Option<String> =
            profile.string_table.get(filename).and_then(|name| snapshot.build_ids.get(name.as_str())).cloned();
        if let Some(build_id) = build_id {
            profile.mapping[index].build_id = intern(&mut profile.string_table, &build_id);
        }
    }
    profile
}

/// pprof takes the first mapping for the program (`File:`, and the build ID Parca and Pyroscope
/// file the profile under), as Go puts its executable first: so does a one-process profile.
fn executable_first(profile: &mut Profile, executable: &str) {
    let is_executable = |mapping: &crate::report::profile_proto::Mapping| {
        usize::try_from(mapping.filename)
            .ok()
            .and_then(|index| profile.string_table.get(index))
            .is_some_and(|name| name == executable)
    };
    if let Some(position) = profile.mapping.iter().position(is_executable) {
        // Locations refer to mappings by id, not by position.
        let mapping = profile.mapping.remove(position);
        profile.mapping.insert(0, mapping);
    }
}

fn intern(strings: &mut Vec<String>, text: &str) -> i64 {
    let index = strings.iter().position(|known| known == text).unwrap_or_else(|| {
        strings.push(text.to_owned());
        strings.len() - 1
    });
    i64::try_from(index).unwrap_or(0)
}

/// Takes `before`'s values from the samples of the same stack and labels in `after`, and drops
/// the samples left with nothing.
fn subtract(after: &mut Profile, before: &Profile) {
    let mut earlier: HashMap<SampleKey, Vec<i64>> = HashMap::new();
    for sample in &before.sample {
        earlier.insert(SampleKey::of(before, sample), sample.value.clone());
    }
    let keys: Vec<SampleKey> = after.sample.iter().map(|sample| SampleKey::of(after, sample)).collect();
    for (sample, key) in after.sample.iter_mut().zip(keys) {
        if let Some(values) = earlier.get(&key) {
            for (value, old) in sample.value.iter_mut().zip(values) {
                *value = value.saturating_sub(*old);
            }
        }
    }
    after.sample.retain(|sample| sample.value.iter().any(|&value| value != 0));
}

/// A sample's identity across two profiles, whose ids and string indexes differ: its labels
/// and its locations' addresses and modules.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SampleKey {
    labels: Vec<(String, String, i64)>,
    locations: Vec<(u64, String, Vec<String>)>,
}

impl SampleKey {
    fn of(profile: &Profile, sample: &Sample) -> Self {
        let text = |index: i64| -> String {
            usize::try_from(index)
                .ok()
                .and_then(|index| profile.string_table.get(index))
                .map_or_else(String::new, String::clone)
        };
        let labels = sample.label.iter().map(|label| (text(label.key), text(label.str), label.num)).collect();
        let locations = sample
            .location_id
            .iter()
            .filter_map(|&id| by_id(&profile.location, id, |location| location.id))
            .map(|location| {
                let module = by_id(&profile.mapping, location.mapping_id, |mapping| mapping.id)
                    .map(|mapping| text(mapping.filename))
                    .unwrap_or_default();
                // Addresses alone would do in one process; names keep stacks without them apart.
                let functions = location
                    .line
                    .iter()
                    .filter_map(|line| by_id(&profile.function, line.function_id, |function| function.id))
                    .map(|function| text(function.name))
                    .collect();
                (location.address, module, functions)
            })
            .collect();
        Self { labels, locations }
    }
}

/// The entry with `id`: pprof's builder numbers entries 1, 2, ... in order, so it is at
/// `id - 1`; anything else is looked for.
fn by_id<T>(entries: &[T], id: u64, id_of: impl Fn(&T) -> u64) -> Option<&T> {
    let at = usize::try_from(id).ok().and_then(|id| id.checked_sub(1)).and_then(|index| entries.get(index));
    at.filter(|entry| id_of(entry) == id).or_else(|| entries.iter().find(|entry| id_of(entry) == id))
}
