//! memtrace's kernel side: uprobes on the allocator that record facts and nothing more.
//!
//! Entry probes remember what was asked for, per thread; the return probe turns that into an
//! event with the caller's stack; the free probe sends the freed address. By default all state
//! about what is outstanding lives in the agent; `--combined` keeps it here instead
//! (`combined`, `block_table`), and `--sample-bytes` keeps the sampled blocks so that only their
//! frees are sent. Every drop is counted in `COUNTERS`.
#![no_std]
#![no_main]
// `block_table` claims slots with the compare-and-exchange intrinsic (see `claim` there).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod allocations;
mod block_table;
mod by_id;
mod combined;
mod faults;
mod floor;
mod frees;
mod loader;
mod mappings;
mod maps;
mod regs;
mod sampling;
mod unwind;
mod unwound;
mod user_stack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach here, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
