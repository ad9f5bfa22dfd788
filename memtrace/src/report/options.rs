//! How a report is rendered: the format, and what the formats that take options were given.
//! The command line fills these in; nothing here knows about it.
use clap::ValueEnum;

use super::{LeakKind, Stack};

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
    /// The leak kinds text, folded, svg and pprof show (`--kinds`); JSON and JUnit have all.
    pub kinds: KindFilter,
    /// JUnit: `file` and `line` attributes on each test case (`--junit-locations`).
    pub junit_locations: bool,
}

impl RenderOptions {
    /// Options with every default: all kinds shown, no `--top`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            top: None,
            weight: Weight::Bytes,
            sort: SortBy::Bytes,
            kinds: KindFilter::ALL,
            junit_locations: false,
        }
    }

    /// Whether this format shows only some leak kinds: the stacks of the others are left out
    /// before `--top` picks, so the report must keep every stack until it is rendered.
    pub fn filters_kinds(&self) -> bool {
        !self.kinds.is_all() && matches!(self.format, Format::Text | Format::Folded | Format::Svg | Format::Pprof)
    }
}

/// A set of leak kinds (`--kinds`). A stack without a leak kind (memory outside malloc, a
/// process that was not scanned) is always shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindFilter(u8);

impl KindFilter {
    pub const ALL: KindFilter = KindFilter(0b1111);

    pub fn of(kinds: &[LeakKind]) -> Self {
        KindFilter(kinds.iter().fold(0, |bits, &kind| bits | Self::bit(kind)))
    }

    fn bit(kind: LeakKind) -> u8 {
        1 << kind as u8
    }

    pub fn is_all(self) -> bool {
        self == Self::ALL
    }

    pub fn contains(self, kind: LeakKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// The kinds in the set, in `LeakKind` order.
    pub fn kinds(self) -> Vec<LeakKind> {
        LeakKind::ALL.into_iter().filter(|&kind| self.contains(kind)).collect()
    }

    pub fn shows(self, stack: &Stack) -> bool {
        stack.leak_kind.is_none_or(|kind| self.contains(kind))
    }
}

/// Most bytes first, or most allocations first (`--sort count`); the other breaks ties.
pub fn sort_stacks(stacks: &mut [Stack], sort: SortBy) {
    match sort {
        SortBy::Bytes => stacks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.allocations.cmp(&a.allocations))),
        SortBy::Count => stacks.sort_by(|a, b| b.allocations.cmp(&a.allocations).then(b.bytes.cmp(&a.bytes))),
    }
}
