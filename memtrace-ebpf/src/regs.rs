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

/// Where a system call's arguments are in the kernel's saved registers (x86-64's syscall ABI:
/// rdi, rsi, rdx, r10).
#[cfg(bpf_target_arch = "x86_64")]
const SYSCALL_ARGUMENTS: [usize; 4] = [
    core::mem::offset_of!(pt_regs, rdi),
    core::mem::offset_of!(pt_regs, rsi),
    core::mem::offset_of!(pt_regs, rdx),
    core::mem::offset_of!(pt_regs, r10),
];

/// On arm64, x0 to x3: the first four of `regs[31]`, at the start of `pt_regs`.
#[cfg(bpf_target_arch = "aarch64")]
const SYSCALL_ARGUMENTS: [usize; 4] = [0, 8, 16, 24];

/// Argument `index` (0 to 3) of the system call being entered, from the registers a raw
/// `sys_enter` tracepoint passes (a kernel pointer: read with `bpf_probe_read_kernel`); 0 if
/// it cannot be read.
#[inline(always)]
pub fn syscall_argument(regs: *const pt_regs, index: usize) -> u64 {
    let Some(&offset) = SYSCALL_ARGUMENTS.get(index) else { return 0 };
    // SAFETY: the helper checks the address; only the pointer is computed here.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(regs.cast::<u8>().wrapping_add(offset).cast::<u64>()) }
        .unwrap_or(0)
}
