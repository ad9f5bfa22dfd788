//! Where in a function to put its probe. A uprobe costs about 1 µs when the kernel can emulate
//! the probed instruction (a `push`) and about 14 µs when it must single-step it out of line
//! (glibc's `free` begins with `test %rdi,%rdi`). For a release function beginning with a NULL
//! check, the probe goes to the instruction right after it, when that instruction is a push
//! the kernel emulates: every non-NULL call passes there with its argument still in `%rdi` and
//! the stack pointer unchanged. Any other shape keeps the probe at the entry.

/// Bytes read at a function's start to decide.
pub const PROLOGUE_BYTES: usize = 12;

/// The offset from the function's start at which to probe a `f(ptr)` release function, when
/// its prologue is `test %rdi,%rdi; je <out>` followed by an emulated push; `None` otherwise.
pub fn after_null_check(prologue: &[u8]) -> Option<u64> {
    let rest = prologue.strip_prefix(&[0x48, 0x85, 0xff])?; // test %rdi,%rdi
    let skip = match rest {
        [0x74, _, ..] => 3 + 2,             // je rel8
        [0x0f, 0x84, _, _, _, _, ..] => 3 + 6, // je rel32
        _ => return None,
    };
    is_emulated_push(prologue.get(skip..)?).then_some(skip as u64)
}

/// `push %reg`: 0x50-0x57, or 0x41 0x50-0x57 for %r8-%r15. The kernel emulates both.
fn is_emulated_push(code: &[u8]) -> bool {
    matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_is_probed_after_its_null_check() {
        // glibc 2.36's free: test %rdi,%rdi; je +0xbf; push %rbp; lea ...
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d];
        assert_eq!(after_null_check(&free), Some(9));
        let short = [0x48, 0x85, 0xff, 0x74, 0x10, 0x41, 0x54, 0x00];
        assert_eq!(after_null_check(&short), Some(5));
    }

    #[test]
    fn anything_else_stays_at_the_entry() {
        // mimalloc's free: the NULL check is followed by a lea, which would be single-stepped.
        assert_eq!(after_null_check(&[0x48, 0x85, 0xff, 0x74, 0x5d, 0x48, 0x8d, 0x7f, 0xff]), None);
        // jemalloc's free starts with a load.
        assert_eq!(after_null_check(&[0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00]), None);
        // A truncated prologue.
        assert_eq!(after_null_check(&[0x48, 0x85, 0xff, 0x0f, 0x84]), None);
    }
}
