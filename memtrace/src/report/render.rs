//! One entry point for every output format, so that `run`, `record` and `memtrace report`
//! render a `Report` the same way.
use std::io::{self, Write};

use super::{Report, folded, json, junit, pprof, printable, sort_stacks, svg, text};
use crate::cli::{Format, ReportArgs, SortBy, Weight};

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

impl From<&ReportArgs> for RenderOptions {
    fn from(args: &ReportArgs) -> Self {
        Self { format: args.format, top: args.top, weight: args.weight, sort: args.sort }
    }
}

pub fn render(report: &Report, options: &RenderOptions, out: &mut dyn Write) -> io::Result<()> {
    let resorted;
    let report = if options.sort == SortBy::Bytes {
        report
    } else {
        let mut copy = report.clone();
        sort_stacks(&mut copy.stacks, options.sort);
        resorted = copy;
        &resorted
    };
    match options.format {
        // Whatever a field holds, no control character but the newline reaches a terminal.
        Format::Text => text::render(report, options.top, &mut printable::Printable(out)),
        Format::Json => json::render(report, out),
        Format::Folded => folded::render(report, options.weight, options.top, out),
        Format::Svg => svg::render(report, options.weight, options.top, out),
        Format::Pprof => pprof::render(report, out),
        Format::Junit => junit::render(report, out),
    }
}
