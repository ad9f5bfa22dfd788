#![no_main]
//! See `memtrace_fuzz::suppressions`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::suppressions(data));
