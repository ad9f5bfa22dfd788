#![no_main]
//! See `memtrace_fuzz::elf_symbols`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| memtrace_fuzz::elf_symbols(data));
