#![no_main]
//! See `memtrace_fuzz::perf_map`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::perf_map(data));
