//! One entry point for every output format, so that `run`, `record` and `memtrace report`
//! render a `Report` the same way.
use std::{
    borrow::Cow,
    io::{self, Write},
};

use super::{
    Report, folded, json, junit,
    options::{Format, RenderOptions, SortBy, sort_stacks},
    pprof, printable, svg,
    text::{self, KindsShown},
};

pub fn render(report: &Report, options: &RenderOptions, out: &mut dyn Write) -> io::Result<()> {
    let mut view = Cow::Borrowed(report);
    if options.sort != SortBy::Bytes {
        sort_stacks(&mut view.to_mut().stacks, options.sort);
    }
    // `--kinds`: the other kinds' stacks go before `--top` picks among the rest.
    let mut shown = KindsShown::ALL;
    if options.filters_kinds() {
        let before = view.stacks.len();
        view.to_mut().stacks.retain(|stack| options.kinds.shows(stack));
        shown = KindsShown { kinds: Some(options.kinds), hidden: (before - view.stacks.len()) as u64 };
    }
    let report = view.as_ref();
    match options.format {
        // Whatever a field holds, no control character but the newline reaches a terminal.
        Format::Text => text::render(report, options.top, shown, &mut printable::Printable(out)),
        Format::Json => json::render(report, out),
        Format::Folded => folded::render(report, options.weight, options.top, out),
        Format::Svg => svg::render(report, options.weight, options.top, out),
        Format::Pprof => pprof::render(report, options.top, out),
        Format::Junit => junit::render(report, options.junit_locations, out),
    }
}
