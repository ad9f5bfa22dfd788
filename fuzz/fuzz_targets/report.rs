#![no_main]
//! See `memtrace_fuzz::report`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::report(data));
