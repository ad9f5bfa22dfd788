//! The kernel's side of the tables: the global row and page arrays (written through shared
//! mappings, appended to and never rewritten, so the walks reading them never see a row
//! change), each table's descriptor, each process's executable mappings, and the counters.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as AyaHashMap, Map, MapData, PerCpuArray},
};
use memtrace_common::unwind::{
    ExecMapping, MAX_EXEC_MAPPINGS, PagePair, ProcessMappings, RowPair, UnwindCounter, UnwindRow, UnwindTable, names,
    row_for,
};

use super::table::Table;

/// How much kernel memory the tables get, split between the arrays; fixed at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Values of `UNWIND_ROWS` (two rows each) and of `UNWIND_PAGES` (two entries each).
    pub row_pairs: u32,
    pub page_pairs: u32,
    pub tables: u32,
}

impl Capacity {
    /// The arrays' sizes for a budget of `bytes`: a page-index entry (4 bytes) per 256 bytes of
    /// code and about one row (12 bytes) per 50 bytes of code (Debian's libc), so the pages get
    /// a sixteenth.
    pub fn for_budget(bytes: u64) -> Self {
        let page_bytes = bytes / 16;
        let rows = (bytes - page_bytes) / size_of::<RowPair>() as u64;
        let pages = page_bytes / size_of::<PagePair>() as u64;
        Self { row_pairs: clamp(rows), page_pairs: clamp(pages), tables: 4096 }
    }

    /// One entry each: what `--unwind fp` loads (the arrays must exist, and are never read).
    pub const NONE: Capacity = Capacity { row_pairs: 1, page_pairs: 1, tables: 1 };
}

fn clamp(entries: u64) -> u32 {
    u32::try_from(entries).unwrap_or(u32::MAX / 16).max(1)
}

/// Why a table found no place in the kernel's arrays.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the unwind tables' memory is used up ({0}): raise --unwind-memory")]
    NoRoom(String),
    #[error("writing its descriptor: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// The kernel's unwind maps, taken from the loaded object.
pub struct KernelTables {
    rows: SharedArray<UnwindRow>,
    pages: SharedArray<u32>,
    rows_used: usize,
    pages_used: usize,
    descriptors: Array<MapData, UnwindTable>,
    /// Each table's descriptor as written, by id.
    placed: Vec<UnwindTable>,
    max_tables: u32,
    processes: AyaHashMap<MapData, u32, ProcessMappings>,
    exec_mmaps: AyaHashMap<MapData, u32, u64>,
    counters: PerCpuArray<MapData, u64>,
    loader_stops: AyaHashMap<MapData, u32, u8>,
}

impl KernelTables {
    /// Takes the maps out of the loaded object (they stay in use by its programs).
    pub fn take(ebpf: &mut Ebpf, capacity: Capacity) -> io::Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| io::Error::other(format!("{name} is missing from the eBPF object")))
        };
        let (Map::Array(rows), Map::Array(pages)) = (take(names::UNWIND_ROWS)?, take(names::UNWIND_PAGES)?) else {
            return Err(io::Error::other("the unwind arrays are not arrays"));
        };
        let map_error = |error: aya::maps::MapError| io::Error::other(error.to_string());
        let descriptors = Array::try_from(take(names::UNWIND_TABLES)?).map_err(map_error)?;
        let processes = AyaHashMap::try_from(take(names::UNWIND_PROCESSES)?).map_err(map_error)?;
        let exec_mmaps = AyaHashMap::try_from(take(names::EXEC_MMAPS)?).map_err(map_error)?;
        let counters = PerCpuArray::try_from(take(names::UNWIND_COUNTERS)?).map_err(map_error)?;
        let loader_stops = AyaHashMap::try_from(take(names::LOADER_STOPS)?).map_err(map_error)?;
        Ok(Self {
            rows: SharedArray::map(rows, capacity.row_pairs as usize * 2)?,
            pages: SharedArray::map(pages, capacity.page_pairs as usize * 2)?,
            rows_used: 0,
            pages_used: 0,
            descriptors,
            placed: Vec::new(),
            max_tables: capacity.tables,
            processes,
            exec_mmaps,
            counters,
            loader_stops,
        })
    }

    /// Copies a table into the arrays and publishes its descriptor; returns its id.
    pub fn place(&mut self, table: &Table) -> Result<u32, PlaceError> {
        let id = self.placed.len() as u32;
        if id >= self.max_tables {
            return Err(PlaceError::NoRoom(format!("all {} table descriptors taken", self.max_tables)));
        }
        let rows_end = self.rows_used + table.rows.len();
        let pages_end = self.pages_used + table.pages.len();
        if rows_end > self.rows.len() || pages_end > self.pages.len() {
            return Err(PlaceError::NoRoom(format!(
                "{} rows needed, {} left; {} index entries needed, {} left",
                table.rows.len(),
                self.rows.len() - self.rows_used,
                table.pages.len(),
                self.pages.len() - self.pages_used,
            )));
        }
        self.rows.slice_mut()[self.rows_used..rows_end].copy_from_slice(&table.rows);
        self.pages.slice_mut()[self.pages_used..pages_end].copy_from_slice(&table.pages);
        let descriptor = table.descriptor(self.rows_used as u32, self.pages_used as u32);
        // The rows are in place before the descriptor that leads to them (a system call).
        self.descriptors.set(id, descriptor, 0)?;
        self.rows_used = rows_end;
        self.pages_used = pages_end;
        self.placed.push(descriptor);
        Ok(id)
    }

    /// The row of table `id` covering ELF virtual address `address`, found as the kernel finds
    /// it, in the same arrays.
    pub fn row_in(&self, id: u32, address: u64) -> Option<UnwindRow> {
        let descriptor = *self.placed.get(id as usize)?;
        let (rows, pages) = (self.rows.slice(), self.pages.slice());
        let (first_row, first_page) = (descriptor.first_row as usize, descriptor.first_page as usize);
        row_for(
            &descriptor,
            address,
            |page| pages.get(first_page.checked_add(page as usize)?).copied(),
            |index| rows.get(first_row.checked_add(index as usize)?).copied(),
        )
    }

    /// Bytes of rows and pages in use.
    pub fn bytes_used(&self) -> u64 {
        (self.rows_used * size_of::<UnwindRow>() + self.pages_used * size_of::<u32>()) as u64
    }

    /// Tells the kernel process `pid`'s executable mappings (sorted by start, at most
    /// `MAX_EXEC_MAPPINGS`), which include its first `exec_mmaps` executable mmaps.
    pub fn set_process(
        &mut self,
        pid: u32,
        mappings: &[ExecMapping],
        exec_mmaps: u64,
    ) -> Result<(), aya::maps::MapError> {
        let mut value = ProcessMappings {
            count: 0,
            _padding: 0,
            exec_mmaps_applied: exec_mmaps,
            mappings: [ExecMapping::default(); MAX_EXEC_MAPPINGS],
        };
        let count = mappings.len().min(MAX_EXEC_MAPPINGS);
        value.mappings[..count].copy_from_slice(&mappings[..count]);
        value.count = count as u32;
        self.processes.insert(pid, value, 0)
    }

    /// Forgets a process that ended (its id may come back as another process).
    pub fn forget_process(&mut self, pid: u32) {
        let _ = self.processes.remove(&pid);
        let _ = self.exec_mmaps.remove(&pid);
    }

    /// The executable mmaps the kernel has counted for `pid`.
    pub fn exec_mmaps(&self, pid: u32) -> u64 {
        self.exec_mmaps.get(&pid, 0).unwrap_or(0)
    }

    /// Whether the loader program stopped thread `tid`; forgets that it did.
    pub fn take_loader_stop(&mut self, tid: u32) -> bool {
        self.loader_stops.remove(&tid).is_ok()
    }

    /// The kernel's counters, summed over CPUs, indexed by `UnwindCounter`.
    pub fn counters(&self) -> [u64; UnwindCounter::ALL.len()] {
        let mut sums = [0; UnwindCounter::ALL.len()];
        for counter in UnwindCounter::ALL {
            if let Ok(values) = self.counters.get(&(counter as u32), 0) {
                sums[counter as usize] = values.iter().sum();
            }
        }
        sums
    }
}

/// A BPF array created with `BPF_F_MMAPABLE`, mapped into memtrace as `len` entries of `T`
/// (the array's values are pairs of them, see `RowPair`); unmapped when dropped.
struct SharedArray<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
    _map: MapData,
}

impl<T: Copy> SharedArray<T> {
    /// Maps the array's first `len` entries (its size, as memtrace created it, in `T`s).
    fn map(map: MapData, len: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes =
            len.checked_mul(size_of::<T>()).ok_or_else(|| io::Error::other("array too large"))?.next_multiple_of(page);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a new shared mapping of a BPF array created with BPF_F_MMAPABLE, of its
        // page-rounded size; nothing else in this process refers to that memory.
        let address = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(address.cast::<T>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { base, len, bytes, _map: map })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn slice(&self) -> &[T] {
        // SAFETY: `len` entries of plain data in a mapping alive as long as `self`; the kernel
        // only reads them.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    fn slice_mut(&mut self) -> &mut [T] {
        // SAFETY: as above; memtrace is the only writer, and writes only entries no published
        // descriptor leads to yet.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

// SAFETY: the mapping is plain shared memory, valid until drop, written only through `&mut`.
unsafe impl<T: Send> Send for SharedArray<T> {}

impl<T> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_between_rows_and_pages() {
        let capacity = Capacity::for_budget(32 << 20);
        assert_eq!(capacity.page_pairs, (32 << 20) / 16 / 8);
        assert_eq!(capacity.row_pairs as u64, ((32u64 << 20) - (32 << 20) / 16) / 24);
        assert_eq!(Capacity::for_budget(0).row_pairs, 1);
    }
}
