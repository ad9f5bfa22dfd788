//! Where in a function to put its probe. A uprobe costs about 1 µs when the kernel can emulate
//! the probed instruction (a `push` of a register, a relative `jmp`, `call` or conditional jump)
//! and ten times that when it must single-step the instruction out of line: glibc's `free`
//! begins with `test %rdi,%rdi`, libstdc++'s operators with `endbr64`.
//!
//! So each probed function's first instructions are decoded (iced-x86), and the probe goes on
//! the first one the kernel emulates, provided every instruction before it is one a probe can
//! be moved past: straight-line code (every call passes through), no memory access, and no
//! write to the stack pointer or an argument register. The probe then sees the arguments, the
//! stack pointer and the return address exactly as at the entry, which the entry programs, the
//! nesting rule and the return probes all rely on. Anything else keeps the probe at the entry.
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};

/// Bytes read at a function's start to decide.
pub const PROLOGUE_BYTES: usize = 64;

/// At most this many instructions are moved past.
const MAX_SKIPPED: usize = 8;

/// Where the probe goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Bytes past the function's entry.
    pub offset: u64,
    /// The instruction probed, as the disassembler writes it.
    pub instruction: String,
}

/// The first instruction the kernel emulates, when only movable instructions come before it;
/// `None` when the probe is best left at the entry (already emulated there, or unsure).
pub fn emulated_probe_point(code: &[u8]) -> Option<Placement> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    for _ in 0..=MAX_SKIPPED {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return None;
        }
        if emulated(&instruction) {
            let offset = instruction.ip();
            return (offset > 0).then(|| Placement { offset, instruction: instruction.to_string() });
        }
        if !movable_past(&instruction, &mut info) {
            return None;
        }
    }
    None
}

/// Instructions the x86 uprobe code emulates instead of single-stepping: relative branches and
/// calls (`branch_setup_xol_ops`) and `push` of a 64-bit register (`push_setup_xol_ops`).
fn emulated(instruction: &Instruction) -> bool {
    match instruction.flow_control() {
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call => {
            matches!(instruction.op0_kind(), OpKind::NearBranch64)
        }
        FlowControl::Next => {
            instruction.mnemonic() == Mnemonic::Push
                && instruction.op0_kind() == OpKind::Register
                && instruction.op0_register().is_gpr64()
                && instruction.code() != Code::Push_rm64
        }
        _ => false,
    }
}

/// Registers that hold the arguments (System V AMD64) or the stack pointer.
const PRESERVED: [Register; 7] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9, Register::RSP];

/// Whether a probe may sit after this instruction instead of on it: it falls through, touches
/// no memory, and leaves the arguments and the stack pointer alone (`endbr64`, `nop`, `test`,
/// `cmp`, a move into a scratch register).
fn movable_past(instruction: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    if instruction.flow_control() != FlowControl::Next || instruction.has_lock_prefix() {
        return false;
    }
    let used = info.info(instruction);
    if used.used_memory().iter().any(|memory| memory.access() != OpAccess::NoMemAccess) {
        return false;
    }
    !used.used_registers().iter().any(|used| {
        let writes =
            !matches!(used.access(), OpAccess::Read | OpAccess::CondRead | OpAccess::None | OpAccess::NoMemAccess);
        writes && PRESERVED.contains(&used.register().full_register())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(code: &[u8]) -> Option<u64> {
        emulated_probe_point(code).map(|placement| placement.offset)
    }

    #[test]
    fn glibc_free_is_probed_on_the_branch_of_its_null_check() {
        // glibc 2.36's free: test %rdi,%rdi; je +0xbf; push %rbp; lea ...
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d, 0x77, 0xf0];
        let placement = emulated_probe_point(&free).unwrap();
        assert_eq!(placement.offset, 3);
        assert!(placement.instruction.starts_with("je"), "{placement:?}");
    }

    #[test]
    fn libstdcxx_operators_are_probed_past_endbr64() {
        // operator new(size_t): endbr64; test %rdi,%rdi; mov $1,%eax; push %rbx; cmovne ...
        let new =
            [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x53, 0x48, 0x0f, 0x45, 0xc7];
        assert_eq!(offset(&new), Some(12));
        // operator delete(void*): endbr64; jmp free@plt
        let delete = [0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x87, 0x2f, 0xff, 0xff];
        assert_eq!(offset(&delete), Some(4));
    }

    #[test]
    fn entries_already_emulated_or_unsafe_to_move_past_stay() {
        // glibc's malloc starts with push %r12: already emulated at the entry.
        assert_eq!(offset(&[0x41, 0x54, 0x55, 0x53]), None);
        // new(size_t, nothrow): endbr64; sub $8,%rsp: moves the stack pointer.
        assert_eq!(offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0]), None);
        // jemalloc's free starts with a load from memory.
        assert_eq!(offset(&[0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, 0x55]), None);
        // mov %rdi,%rbx is fine, but mov $0,%edi changes an argument.
        assert_eq!(offset(&[0x48, 0x89, 0xfb, 0x55]), Some(3));
        assert_eq!(offset(&[0xbf, 0x00, 0x00, 0x00, 0x00, 0x55]), None);
        // A truncated prologue.
        assert_eq!(offset(&[0x48, 0x85, 0xff, 0x0f, 0x84]), None);
    }
}
