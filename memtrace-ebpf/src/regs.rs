//! Reading the user stack pointer out of the probe's saved registers.
use aya_ebpf::bindings::pt_regs;

/// The user stack pointer when the probe fired.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn stack_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: the probe context points at the kernel's saved user registers, readable directly.
    unsafe { (*regs).rsp }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn stack_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: as above.
    unsafe { (*regs).sp }
}
