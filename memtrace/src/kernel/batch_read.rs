//! Reading a whole kernel map in a few system calls (`BPF_MAP_LOOKUP_BATCH`).
//!
//! aya iterates a map with two system calls per entry (next key, then lookup). `--combined`
//! reads the blocks that overflowed the block table and every CPU's per-stack totals when it
//! reports, and the overflowed blocks again on each exec of a traced process: thousands of
//! entries per call instead.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
};

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
    let (keys, values) = read_batches::<K, V>(map, 1)?;
    Ok(keys.into_iter().zip(values).collect())
}

/// Every slot of a per-CPU array, each CPU's copy: slot `i`'s copies are `cpus` values from
/// index `i * cpus`. `cpus` must be the number of possible CPUs, as the kernel counts them.
pub fn read_per_cpu_array<V: Pod>(map: &MapData, cpus: usize) -> io::Result<Vec<V>> {
    // The kernel rounds each CPU's copy up to 8 bytes; with a size that is already a multiple
    // of 8 the copies are exactly `V`s side by side.
    if !size_of::<V>().is_multiple_of(8) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "per-CPU values must be a multiple of 8 bytes"));
    }
    let (_, values) = read_batches::<u32, V>(map, cpus.max(1))?;
    Ok(values)
}

/// Reads a map in batches: its keys and, for each key, `copies` values (one per CPU for the
/// per-CPU maps). Between calls the kernel's position is a bucket index for hash maps and the
/// next index for arrays: a 32-bit word either way.
fn read_batches<K: Pod, V: Pod>(map: &MapData, copies: usize) -> io::Result<(Vec<K>, Vec<V>)> {
    let fd = map.fd().as_fd().as_raw_fd();
    let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
    let mut batch_size = FIRST_BATCH;
    let mut position: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(batch_size);
        let mut values: Vec<V> = Vec::with_capacity(batch_size * copies);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const position) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch_size as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and `count * copies` values
        // and at the position words, all alive for the call; the kernel writes at most that.
        let result =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as u32) };
        // ENOENT: the last entries were read, perhaps with some in this call.
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
        // SAFETY: the kernel filled in `filled` keys and their values; both types are plain data.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled * copies);
        }
        all_keys.extend(keys);
        all_values.extend(values);
        if done {
            return Ok((all_keys, all_values));
        }
        position = next;
        first = false;
    }
}
