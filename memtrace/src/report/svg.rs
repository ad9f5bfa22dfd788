//! An interactive flamegraph (SVG) of the folded stacks, drawn by inferno, titled with the
//! command and the totals. The root cell of each leak kind has that kind's colour (red for
//! definitely lost, orange indirectly, yellow possibly, blue still reachable; paler when
//! suppressed), through inferno's palette map; the other cells take the memory palette.
use std::io::{self, Write};

use inferno::flamegraph::{
    self,
    color::{BasicPalette, Color, Palette, PaletteMap},
};

use super::{LeakKind, Report, folded, options::Weight};

pub fn render(report: &Report, weight: Weight, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let lines = within_u64(folded::weighted_paths(report, weight, top));
    let counts = &report.summary.counts;
    let mut options = flamegraph::Options::default();
    options.title = format!("memtrace: {}", report.target.command.join(" "));
    options.subtitle = Some(format!(
        "{} bytes in {} allocations outstanding from {} stacks; {} bytes in {} allocations during the trace",
        counts.outstanding_bytes,
        counts.outstanding_allocations,
        report.summary.stacks_total,
        counts.total_allocated_bytes,
        counts.total_allocations,
    ));
    options.count_name = match weight {
        Weight::Bytes => "bytes",
        Weight::Allocations => "allocations",
        Weight::Faults => "faults",
    }
    .to_owned();
    if weight == Weight::Faults {
        let faults = report.faults.as_ref();
        options.subtitle = Some(format!(
            "{} minor and {} major page faults{}",
            faults.map_or(0, |faults| faults.minor),
            faults.map_or(0, |faults| faults.major),
            if faults.is_some_and(|faults| faults.scaled) { " (estimated from samples)" } else { "" }
        ));
    }
    options.colors = Palette::Basic(BasicPalette::Mem);
    let mut kind_colors = leak_kind_colors();
    options.palette_map = Some(&mut kind_colors);
    let drawn = flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut *out);
    match drawn {
        // Nothing outstanding: inferno has still written a well-formed SVG that says so.
        Err(error) if lines.is_empty() && error.kind() == io::ErrorKind::InvalidData => {
            match weight {
                Weight::Faults => {
                    eprintln!("memtrace: no faults recorded (trace with --faults): the flamegraph is empty")
                }
                _ => eprintln!("memtrace: no stack holds memory: the flamegraph is empty"),
            }
            Ok(())
        }
        other => other,
    }
}

/// The colour of each leak kind's root cell (see [`folded::leak_root`]).
fn leak_kind_colors() -> PaletteMap {
    let mut colors = PaletteMap::default();
    for kind in LeakKind::ALL {
        let (r, g, b) = match kind {
            LeakKind::DefinitelyLost => (215, 48, 39),
            LeakKind::IndirectlyLost => (244, 130, 50),
            LeakKind::PossiblyLost => (230, 200, 60),
            LeakKind::StillReachable => (90, 140, 210),
        };
        colors.insert(folded::leak_root(kind, false), Color { r, g, b });
        let pale = |value: u8| value / 2 + 110;
        colors.insert(folded::leak_root(kind, true), Color { r: pale(r), g: pale(g), b: pale(b) });
    }
    colors
}

/// The folded lines, their weights divided alike when needed so that their total fits in a
/// u64 (inferno adds them up; only a crafted report's counts come near).
fn within_u64(paths: Vec<(String, u64)>) -> Vec<String> {
    let total: u128 = paths.iter().map(|(_, value)| u128::from(*value)).sum();
    let divisor = total.div_ceil(u128::from(u64::MAX)).max(1);
    paths
        .into_iter()
        .filter_map(|(path, value)| {
            let value = u128::from(value) / divisor;
            (value > 0).then(|| format!("{path} {value}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_too_large_to_add_up_are_scaled_alike() {
        assert_eq!(within_u64(vec![("a".into(), 3), ("b".into(), 5)]), ["a 3", "b 5"]);
        let huge = within_u64(vec![("a".into(), u64::MAX), ("b".into(), u64::MAX), ("c".into(), 1)]);
        assert_eq!(huge, [format!("a {}", u64::MAX / 3), format!("b {}", u64::MAX / 3)]);
    }
}
