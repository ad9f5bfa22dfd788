//! Reports loaded by `memtrace report` come from files anyone may have written: every format
//! must render any report that parses, whatever its numbers, without panicking.
use serde_json::{Value, json};

use super::{LeakKind, Report, options::RenderOptions, render};
use crate::report::options::{Format, KindFilter, SortBy, Weight};

/// A report whose every count is u64::MAX and whose times are huge, in every section (the
/// integration tests hand the same file to `memtrace report`).
pub(super) fn crafted() -> Value {
    serde_json::from_str(include_str!("../../tests/data/crafted_report.json")).expect("the crafted report is JSON")
}

const FORMATS: [Format; 6] = [Format::Text, Format::Json, Format::Junit, Format::Folded, Format::Svg, Format::Pprof];

/// Renders `report` every way there is.
fn render_every_way(report: &Report) -> Vec<(RenderOptions, Vec<u8>)> {
    let mut rendered = Vec::new();
    for format in FORMATS {
        for weight in [Weight::Bytes, Weight::Allocations, Weight::Faults] {
            for sort in [SortBy::Bytes, SortBy::Count] {
                for top in [None, Some(0), Some(1), Some(usize::MAX)] {
                    for kinds in [KindFilter::ALL, KindFilter::of(&[LeakKind::DefinitelyLost]), KindFilter::of(&[])] {
                        let junit_locations = kinds != KindFilter::ALL;
                        let options =
                            RenderOptions { top, weight, sort, kinds, junit_locations, ..RenderOptions::new(format) };
                        let mut out = Vec::new();
                        render(report, &options, &mut out).unwrap_or_else(|error| panic!("{options:?}: {error}"));
                        rendered.push((options, out));
                    }
                }
            }
        }
    }
    rendered
}

fn rendered(report: &Report, format: Format, weight: Weight) -> String {
    let mut out = Vec::new();
    render(report, &RenderOptions { weight, ..RenderOptions::new(format) }, &mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_largest_numbers_render_saturated_in_every_format() {
    let report: Report = serde_json::from_value(crafted()).expect("the crafted report parses");
    render_every_way(&report);
    let text = rendered(&report, Format::Text, Weight::Bytes);
    assert!(
        text.contains(
            "\nOutside malloc: 18,446,744,073,709,551,615 bytes mapped, 18,446,744,073,709,551,615 bytes of shared memory, \
             18,446,744,073,709,551,615 bytes of break growth still held\n"
        ),
        "{text}"
    );
    // Two stacks of u64::MAX bytes each fold into one line that stays at u64::MAX.
    let folded = rendered(&report, Format::Folded, Weight::Bytes);
    assert!(folded.contains("pid 4294967295;[definitely lost];main;grab 18446744073709551615\n"), "{folded}");
    let faults = rendered(&report, Format::Folded, Weight::Faults);
    assert_eq!(faults, "pid 7;touch 18446744073709551615\n");
    // pprof's values are signed: the largest counts are i64::MAX, not -1.
    let profile = super::pprof::build(&report, None);
    assert!(
        profile.sample.iter().all(|sample| sample.value.iter().all(|&value| value == 0 || value == i64::MAX)),
        "{:?}",
        profile.sample
    );
    assert!(profile.mapping.iter().any(|mapping| mapping.memory_limit == u64::MAX), "{:?}", profile.mapping);
    assert_eq!(profile.duration_nanos, i64::MAX);
}

/// A small deterministic generator (xorshift), so that a failure names a seed to replay.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number of the kind most likely to break arithmetic.
    fn pick(&mut self, original: &Value) -> Value {
        let choice = self.next() % 8;
        if original.is_f64() {
            return json!(
                [1.7976931348623157e308, -1.7976931348623157e308, 0.0, -0.0, 5e-324, 1e19, -1e19, 0.5][choice as usize]
            );
        }
        json!(
            [0, 1, u64::MAX, u64::MAX - 1, i64::MAX as u64, 1 << 63, self.next(), u64::from(u32::MAX)][choice as usize]
        )
    }

    fn mutate(&mut self, value: &mut Value) {
        match value {
            // The u64 counts (u32 fields such as pids would only stop the report parsing) and
            // the floats.
            Value::Number(number)
                if (number.as_u64().is_some_and(|n| n > u64::from(u32::MAX)) || number.is_f64())
                    && self.next().is_multiple_of(2) =>
            {
                *value = self.pick(value)
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.mutate(item)),
            Value::Object(fields) => fields.values_mut().for_each(|field| self.mutate(field)),
            _ => {}
        }
    }
}

#[test]
fn reports_with_random_extreme_numbers_render_in_every_format() {
    let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
    let mut rendered_reports = 0;
    for round in 0..300 {
        let mut value = crafted();
        numbers.mutate(&mut value);
        // Numbers out of a field's range (a pid of u64::MAX) make the report not parse: an error
        // `memtrace report` states, not a panic.
        let Ok(report) = serde_json::from_value::<Report>(value) else { continue };
        let result = std::panic::catch_unwind(|| render_every_way(&report));
        assert!(result.is_ok(), "round {round} panicked");
        rendered_reports += 1;
    }
    assert!(rendered_reports > 250, "only {rendered_reports} of the mutated reports parsed");
}
