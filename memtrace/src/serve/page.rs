//! `/`: a plain page for people, listing the traced processes with what each holds and links
//! to its flamegraph, profiles and JSON report. Everything a process chose (its command line)
//! is escaped.
use crate::{report::Report, untrusted::group_digits};

pub fn render(report: &Report) -> String {
    let mut rows = String::new();
    for process in &report.processes {
        let pid = process.pid;
        let command = escape(&process.command.join(" "));
        let state = if process.exited { "exited" } else { "traced" };
        rows.push_str(&format!(
            "<tr><td>{pid}</td><td><code>{command}</code></td><td>{state}</td><td class=n>{}</td><td class=n>{}</td>\
             <td><a href=\"/debug/memtrace/flamegraph.svg?pid={pid}\">flamegraph</a> \
             <a href=\"/debug/pprof/heap?pid={pid}\">heap</a> \
             <a href=\"/debug/pprof/allocs?pid={pid}\">allocs</a> \
             <a href=\"/debug/memtrace/report.json?pid={pid}\">json</a></td></tr>\n",
            group_digits(process.summary.outstanding_bytes),
            group_digits(process.summary.outstanding_allocations),
        ));
    }
    let estimated = if report.summary.estimated { " (estimates from a sample)" } else { "" };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>memtrace</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 10px;text-align:left}}.n{{text-align:right}}</style>\
         </head><body>\n<h1>memtrace serve</h1>\n<p>{} processes, tracing for {:.0} s{estimated}. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/debug/pprof/heap\">all processes' heap profile</a> · \
         <a href=\"/debug/memtrace/flamegraph.svg\">all processes' flamegraph</a></p>\n\
         <table><tr><th>pid</th><th>command</th><th></th><th class=n>outstanding bytes</th><th class=n>blocks</th><th></th></tr>\n\
         {rows}</table>\n</body></html>\n",
        report.processes.len(),
        report.duration_seconds,
    )
}

/// HTML-escapes text.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c if c.is_control() => escaped.push('\u{fffd}'),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_are_escaped() {
        assert_eq!(super::escape("<script>\"x\" & 'y'"), "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;");
    }
}
