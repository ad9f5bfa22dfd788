#![no_main]
//! See `memtrace_fuzz::report`.
//!
//! A crafted report's numbers may be anything, and the sums and conversions that fail are at
//! their extremes, which byte mutations of JSON text seldom spell: half the mutations set one
//! number of a report that parses to one of `memtrace_fuzz::EDGE_NUMBERS` (the input stays a
//! JSON file `memtrace report` takes), the others are libFuzzer's own.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::report(data));

libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    if seed.is_multiple_of(2)
        && let Some(mutated) = edge_number(&data[..size], seed / 2)
        && mutated.len() <= max_size
        && let Some(out) = data.get_mut(..mutated.len())
    {
        out.copy_from_slice(&mutated);
        return mutated.len();
    }
    libfuzzer_sys::fuzzer_mutate(data, size, max_size)
});

/// The report with one number (chosen by `choice`) set to an edge value (by `choice` too).
fn edge_number(json: &[u8], choice: u32) -> Option<Vec<u8>> {
    let mut value = serde_json::from_slice::<serde_json::Value>(json).ok()?;
    let mut numbers = Vec::new();
    memtrace_fuzz::numbers_of(&mut value, &mut numbers);
    let choice = usize::try_from(choice).ok()?;
    let count = numbers.len();
    let number = numbers.get_mut(choice.checked_rem(count)?)?;
    let edges = &*memtrace_fuzz::EDGE_NUMBERS;
    **number = edges.get((choice / count.max(1)) % edges.len())?.clone();
    serde_json::to_vec(&value).ok()
}
