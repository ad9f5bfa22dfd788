//! Reading a whole kernel hash map in a few system calls (`BPF_MAP_LOOKUP_BATCH`).
//!
//! aya iterates a map with two system calls per entry (next key, then lookup). `--combined`
//! reads every outstanding block when it reports, and on each exec of a traced process: a
//! million of them in a busy service, in batches of thousands of entries per call.
use std::{io, mem::size_of, os::fd::{AsFd, AsRawFd}};

use aya::{Pod, maps::MapData};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s member for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per system call to start with; more when one hash bucket holds more.
const FIRST_BATCH: usize = 4096;

/// Every entry of a hash map (not a per-CPU one), in the kernel's bucket order.
pub fn read_hash_map<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut entries = Vec::new();
    let mut batch_size = FIRST_BATCH;
    // For hash maps the position between calls is a bucket index.
    let mut position: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(batch_size);
        let mut values: Vec<V> = Vec::with_capacity(batch_size);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const position) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch_size as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and values and at the
        // position words, all alive for the call; the kernel writes at most that much.
        let result = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as u32)
        };
        // ENOENT: the last buckets were read, perhaps with entries in this call.
        let mut done = false;
        if result < 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ENOSPC) => {
                    batch_size *= 4; // one bucket holds more entries than the batch
                    continue;
                }
                Some(libc::ENOENT) => done = true,
                _ => return Err(error),
            }
        }
        let filled = (attr.count as usize).min(batch_size);
        // SAFETY: the kernel filled in `filled` keys and values; both types are plain data.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled);
        }
        entries.extend(keys.into_iter().zip(values));
        if done {
            return Ok(entries);
        }
        position = next;
        first = false;
    }
}
