//! The user stack of an event: walked by unwind tables (`unwind`) where the agent gave the
//! process's modules one, along frame pointers (`frame_pointer`) elsewhere, into per-CPU
//! scratch records, at most `STACK_DEPTH` frames deep.
#[cfg(bpf_target_arch = "x86_64")]
pub mod frame_pointer;
pub mod unwind;

use aya_ebpf::{
    Global,
    bindings::pt_regs,
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    macros::map,
    maps::PerCpuArray,
};
use memtrace_common::{EventWithStack, MAX_STACK_DEPTH, StackFrames, unwind::Registers};
use unwind::Destination;

/// Per-CPU room to assemble an event and its stack before it is copied to `EVENTS`.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<EventWithStack> = PerCpuArray::with_max_entries(1, 0);

/// `--combined`: per-CPU room to walk a stack before it is hashed and perhaps stored.
#[map(name = "STACK_SCRATCH")]
pub static STACK_SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Set at load time: user stack frames captured per event (`--stack-depth`); the walk stops
/// there, which is cheaper for deep stacks.
#[unsafe(no_mangle)]
static STACK_DEPTH: Global<u32> = Global::new(MAX_STACK_DEPTH as u32);

/// Frames to capture: at most the frames array; fewer when the agent asked for a shallower walk.
#[inline(always)]
pub fn stack_depth() -> usize {
    (STACK_DEPTH.load() as usize).clamp(1, MAX_STACK_DEPTH)
}

/// `--combined`: walks the stack from a return probe's registers into `frames` (this CPU's
/// `STACK_SCRATCH`), by tables when the process has them, else by frame pointer. Returns the
/// frames written and whether the stack is truncated (a walk the agent would have had to
/// finish is: nothing can finish it later).
#[inline(always)]
pub fn walk_combined(regs: *const pt_regs, tgid: u32, frames: &mut [u64; MAX_STACK_DEPTH]) -> (usize, bool) {
    // SAFETY: the probe context points at the kernel's saved user registers.
    let start = unsafe { Registers { pc: (*regs).rip, sp: (*regs).rsp, bp: (*regs).rbp } };
    match unwind::walk(tgid, start, true, Destination::Combined, stack_depth()) {
        Some(walked) => (walked.depth, walked.flags != 0),
        None => (frame_pointer::walk(regs, frames, stack_depth()), false),
    }
}

/// The current task's user registers, as saved when it entered the kernel (a system call, or
/// a fault taken in user mode; one taken in the kernel, such as on a user buffer in a system
/// call, finds those of the system call).
#[inline(always)]
pub fn task_user_registers() -> Option<Registers> {
    // SAFETY: helpers without preconditions in a tracing program; the registers are read with
    // a checked kernel read.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        if regs.is_null() {
            return None;
        }
        let mut saved = core::mem::MaybeUninit::<pt_regs>::uninit();
        let read = bpf_probe_read_kernel(saved.as_mut_ptr().cast(), size_of::<pt_regs>() as u32, regs.cast());
        if read != 0 {
            return None;
        }
        let saved = saved.assume_init();
        Some(Registers { pc: saved.rip, sp: saved.rsp, bp: saved.rbp })
    }
}
