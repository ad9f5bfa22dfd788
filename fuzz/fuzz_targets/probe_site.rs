#![no_main]
//! See `memtrace_fuzz::probe_site`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::probe_site(data));
