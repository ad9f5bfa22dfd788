#![no_main]
//! See `memtrace_fuzz::proc_maps`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::proc_maps(data));
