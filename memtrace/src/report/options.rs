//! How a report is rendered: the format, and what the formats that take options were given.
//! The command line fills these in; nothing here knows about it.
use clap::ValueEnum;

use super::Stack;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// JUnit XML for CI systems.
    Junit,
    Folded,
    Svg,
    Pprof,
}

impl Format {
    /// Formats that are not text: a terminal would show garbage.
    pub fn is_binary(self) -> bool {
        self == Format::Pprof
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SortBy {
    #[default]
    Bytes,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weight {
    /// Outstanding bytes per stack.
    Bytes,
    /// Outstanding blocks per stack.
    Allocations,
    /// Page faults (minor and major) per faulting stack (needs a report made with --faults).
    Faults,
}

/// How to render a report: which format, and what the formats that take options were given.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    pub format: Format,
    /// Keep only this many stacks (text shows 10 when not given, the other formats all).
    pub top: Option<usize>,
    /// What a folded line or a flamegraph cell counts.
    pub weight: Weight,
    /// Stack order; a report made live is already in it, a saved one may not be.
    pub sort: SortBy,
}

/// Most bytes first, or most allocations first (`--sort count`); the other breaks ties.
pub fn sort_stacks(stacks: &mut [Stack], sort: SortBy) {
    match sort {
        SortBy::Bytes => stacks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.allocations.cmp(&a.allocations))),
        SortBy::Count => stacks.sort_by(|a, b| b.allocations.cmp(&a.allocations).then(b.bytes.cmp(&a.bytes))),
    }
}
