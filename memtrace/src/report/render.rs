//! One entry point for every output format, so that `run`, `record` and `memtrace report`
//! render a `Report` the same way.
use std::io::{self, Write};

use super::{
    Report, folded, json, junit,
    options::{Format, RenderOptions, SortBy, sort_stacks},
    pprof, printable, svg, text,
};


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
