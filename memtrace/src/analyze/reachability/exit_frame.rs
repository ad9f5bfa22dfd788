//! Where on its stack a thread called `exit` (or `_exit`), so that the scan can start at the
//! caller's frame instead of the stack pointer at the exit stop.
//!
//! Why: the frames of glibc's exit path (exit, __run_exit_handlers, _IO_cleanup, _exit) lie
//! where the program's dead frames were, and their slots that were never written still hold
//! the dead frames' values: a pointer to a block the program lost inside malloc's frame, say.
//! valgrind does not count them (it tracks which stack words were written since the frame was
//! pushed); memtrace cannot, so it skips the exit path's frames, which hold no pointer of the
//! program's own.
//!
//! The caller is found by its return address: the lowest stack word that is a return address
//! after a `call` whose target is `exit` or `_exit`, directly, through a PLT stub
//! (`jmp *GOT(%rip)`, with or without `endbr64` and `bnd`), or through the GOT (`-fno-plt`).
use std::{collections::HashSet, fs::File, os::unix::fs::FileExt};

use object::{Object, ObjectSegment, ObjectSymbol};

use crate::target::maps::Mapping;

/// How far above the stack pointer the return address is looked for.
const SEARCH_BYTES: u64 = 256 * 1024;

/// The addresses of `exit`, then of `_exit`, in the process: in libc, or in a static
/// executable. They are looked for in that order, since `exit` itself ends in `_exit`.
pub fn exit_functions(pid: u32, maps: &[Mapping]) -> [HashSet<u64>; 2] {
    let mut found = [HashSet::new(), HashSet::new()];
    let mut seen = HashSet::new();
    for mapping in maps.iter().filter(|mapping| mapping.is_file() && mapping.offset == 0) {
        let Some(path) = mapping.path.as_deref() else { continue };
        let name = path.rsplit('/').next().unwrap_or(path);
        let libc = name.starts_with("libc.so") || name.starts_with("libc-");
        let executable = procfs::process::Process::new(pid as i32)
            .and_then(|process| process.exe())
            .is_ok_and(|exe| exe.as_os_str() == path);
        if !(libc || executable) || !seen.insert(path.to_owned()) {
            continue;
        }
        let Ok(data) = std::fs::read(mapping.map_file(pid)) else { continue };
        let Ok(file) = object::File::parse(&*data) else { continue };
        // Where the file's first byte is mapped, less the address the file says for it.
        let first = file.segments().find(|segment| segment.file_range().0 == 0).map_or(0, |segment| segment.address());
        let base = if file.kind() == object::ObjectKind::Executable { 0 } else { mapping.start.wrapping_sub(first) };
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            let which = match symbol.name() {
                Ok("exit") => 0,
                Ok("_exit") => 1,
                _ => continue,
            };
            if symbol.address() != 0 {
                found[which].insert(base.wrapping_add(symbol.address()));
            }
        }
    }
    found
}

/// The stack address just above the return address of the call to `exit`/`_exit` on this
/// thread's stack (the caller's stack pointer after the call), if there is one.
pub fn caller_stack_pointer(memory: &File, maps: &[Mapping], stack_pointer: u64, exits: &HashSet<u64>) -> Option<u64> {
    if exits.is_empty() {
        return None;
    }
    let stack = maps.iter().find(|mapping| mapping.contains(stack_pointer))?;
    let start = stack_pointer & !7;
    let end = stack.end.min(start + SEARCH_BYTES);
    let mut words = vec![0u8; (end - start) as usize];
    memory.read_exact_at(&mut words, start).ok()?;
    let executable = |addr: u64| maps.iter().any(|mapping| mapping.executable && mapping.contains(addr));
    let read = |addr: u64, buffer: &mut [u8]| memory.read_exact_at(buffer, addr).is_ok();
    for (index, chunk) in words.chunks_exact(8).enumerate() {
        let word = u64::from_ne_bytes(chunk.try_into().ok()?);
        if word < 6 || !executable(word - 6) {
            continue;
        }
        let mut call = [0u8; 6];
        if !read(word - 6, &mut call) {
            continue;
        }
        if calls_exit(&call, word, exits, &read) {
            return Some(start + 8 * index as u64 + 8);
        }
    }
    None
}

/// Whether the 6 bytes before the return address `after` end with a call to one of `exits`.
fn calls_exit(call: &[u8; 6], after: u64, exits: &HashSet<u64>, read: &impl Fn(u64, &mut [u8]) -> bool) -> bool {
    let displacement = |bytes: &[u8]| i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i64;
    let pointer_at = |slot: u64| {
        let mut bytes = [0u8; 8];
        read(slot, &mut bytes).then(|| u64::from_ne_bytes(bytes))
    };
    // call *disp(%rip): the GOT slot directly (-fno-plt).
    if call[0] == 0xff && call[1] == 0x15 {
        let slot = after.wrapping_add_signed(displacement(&call[2..]));
        if pointer_at(slot).is_some_and(|target| exits.contains(&target)) {
            return true;
        }
    }
    // call rel32: exit itself, or a PLT stub that jumps through the GOT to it.
    if call[1] != 0xe8 {
        return false;
    }
    let target = after.wrapping_add_signed(displacement(&call[2..]));
    if exits.contains(&target) {
        return true;
    }
    let mut stub = [0u8; 16];
    if !read(target, &mut stub) {
        return false;
    }
    let mut at = 0;
    if stub[..4] == [0xf3, 0x0f, 0x1e, 0xfa] {
        at += 4; // endbr64
    }
    if stub[at] == 0xf2 {
        at += 1; // bnd
    }
    if stub[at] != 0xff || stub[at + 1] != 0x25 {
        return false;
    }
    let next = target + at as u64 + 6;
    let slot = next.wrapping_add_signed(displacement(&stub[at + 2..]));
    pointer_at(slot).is_some_and(|target| exits.contains(&target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic code: a PLT stub at 0x2000 jumping through a GOT slot at 0x3000 that holds
    /// exit's address 0x9000.
    fn read(addr: u64, buffer: &mut [u8]) -> bool {
        let mut memory = std::collections::HashMap::new();
        // endbr64; bnd jmp *disp(%rip) with next instruction at 0x200b: disp = 0x3000 - 0x200b.
        let stub: Vec<u8> =
            [&[0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25][..], &(0x3000i32 - 0x200b).to_le_bytes()[..]].concat();
        for (offset, byte) in stub.iter().chain([0u8; 8].iter()).enumerate() {
            memory.insert(0x2000 + offset as u64, *byte);
        }
        for (offset, byte) in 0x9000u64.to_ne_bytes().iter().enumerate() {
            memory.insert(0x3000 + offset as u64, *byte);
        }
        for (offset, slot) in buffer.iter_mut().enumerate() {
            match memory.get(&(addr + offset as u64)) {
                Some(byte) => *slot = *byte,
                None => return false,
            }
        }
        true
    }

    fn call_rel32(after: u64, target: u64) -> [u8; 6] {
        let rel = (target as i64 - after as i64) as i32;
        let bytes = rel.to_le_bytes();
        [0x90, 0xe8, bytes[0], bytes[1], bytes[2], bytes[3]]
    }

    #[test]
    fn calls_to_exit_are_recognized_directly_and_through_the_plt() {
        let exits = HashSet::from([0x9000]);
        assert!(calls_exit(&call_rel32(0x1005, 0x9000), 0x1005, &exits, &read));
        assert!(calls_exit(&call_rel32(0x1005, 0x2000), 0x1005, &exits, &read));
        assert!(!calls_exit(&call_rel32(0x1005, 0x8000), 0x1005, &exits, &read));
        // call *disp(%rip) through the GOT slot at 0x3000.
        let disp = (0x3000i64 - 0x1006) as i32;
        let bytes = disp.to_le_bytes();
        assert!(calls_exit(&[0xff, 0x15, bytes[0], bytes[1], bytes[2], bytes[3]], 0x1006, &exits, &read));
    }
}
