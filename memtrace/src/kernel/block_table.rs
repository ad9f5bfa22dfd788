//! The kernel's block table (`BLOCK_SLOTS`, see the kernel's `block_table`), mapped into
//! memtrace's memory: reading a million blocks is a walk over shared memory instead of
//! system calls, and a process's blocks are let go with the same compare-and-exchange the
//! probes use to claim a slot, so that no probe running meanwhile is disturbed.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use memtrace_common::{BlockSlot, CLAIMED_SLOT, EMPTY_SLOT};

/// A shared, writable mapping of the block table; unmapped when dropped.
pub struct BlockSlots {
    base: NonNull<BlockSlot>,
    slots: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory, valid until drop; every access to a slot's
// address word is atomic, and the other fields are only read as plain data.
unsafe impl Send for BlockSlots {}

/// One block as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableBlock {
    pub tgid: u32,
    pub addr: u64,
    pub size: u64,
    pub stack_hash: u64,
}

impl BlockSlots {
    /// Maps the table's `slots` slots (the array's size, as memtrace created it).
    pub fn map(map: &MapData, slots: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (slots * size_of::<BlockSlot>()).next_multiple_of(page);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a new shared mapping of a BPF array created with BPF_F_MMAPABLE, of its
        // page-rounded size; nothing else in this process refers to that memory.
        let address = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(address.cast::<BlockSlot>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { base, slots, bytes })
    }

    /// Every block in the table. A slot a probe is filling in at this moment is not one yet.
    pub fn blocks(&self) -> impl Iterator<Item = TableBlock> + '_ {
        (0..self.slots).filter_map(|index| self.block_at(index))
    }

    /// Empties the slots of one process and returns its blocks there and their bytes. Call it
    /// while the process is stopped: its probes could otherwise refill the slots meanwhile.
    pub fn forget_process(&self, tgid: u32) -> (u64, u64) {
        let (mut blocks, mut bytes) = (0, 0);
        for index in 0..self.slots {
            let Some(block) = self.block_at(index).filter(|block| block.tgid == tgid) else { continue };
            // Only this process's probes could change the slot now, and they are stopped.
            let emptied = address_word(self.slot(index))
                .compare_exchange(block.addr, EMPTY_SLOT, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if emptied {
                blocks += 1;
                bytes += block.size;
            }
        }
        (blocks, bytes)
    }

    /// The block in slot `index`, if the slot holds a published one.
    fn block_at(&self, index: usize) -> Option<TableBlock> {
        let slot = self.slot(index);
        let addr = address_word(slot).load(Ordering::Acquire);
        if addr == EMPTY_SLOT || addr == CLAIMED_SLOT {
            return None;
        }
        // SAFETY: a slot of the live mapping; its fields were written before its address.
        let (tgid, size, stack_hash) = unsafe {
            (
                (&raw const (*slot).tgid).read_volatile(),
                (&raw const (*slot).size).read_volatile(),
                (&raw const (*slot).stack_hash).read_volatile(),
            )
        };
        Some(TableBlock { tgid, addr, size, stack_hash })
    }

    fn slot(&self, index: usize) -> *mut BlockSlot {
        debug_assert!(index < self.slots);
        // SAFETY: within the mapping.
        unsafe { self.base.as_ptr().add(index) }
    }
}

impl Drop for BlockSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// A slot's address word, shared with the probes.
fn address_word<'a>(slot: *mut BlockSlot) -> &'a AtomicU64 {
    // SAFETY: slots are 8-byte aligned in a mapping that outlives every use here.
    unsafe { AtomicU64::from_ptr(&raw mut (*slot).addr) }
}
