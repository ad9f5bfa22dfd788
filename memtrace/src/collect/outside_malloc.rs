//! Memory outside malloc, per process: the mappings the program's own code made (mmap,
//! mremap, System V shmat) and the growth of its break (brk, sbrk). Mappings and break changes
//! made inside an allocator call only move the break's baseline: the block the caller asked
//! for is what counts, as a heap allocation.
use std::collections::BTreeMap;

/// What kind of memory a mapping is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKind {
    /// A private mapping (anonymous or of a file).
    Private,
    /// Shared memory: `MAP_SHARED` (POSIX `shm_open` + mmap, a shared file) or System V.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub len: u64,
    pub kind: RegionKind,
    pub stack_id: i32,
}

#[derive(Debug, Default)]
pub struct Regions {
    /// Disjoint mappings by start address.
    mappings: BTreeMap<u64, Region>,
    /// The break after the last brk seen; `None` until one is seen.
    last_break: Option<u64>,
    /// Break growth by the program's own code, oldest first, as (stack, bytes).
    grown: Vec<(i32, u64)>,
}

impl Regions {
    /// A new mapping at `start` (replacing whatever it overlaps, as MAP_FIXED does).
    pub fn map(&mut self, start: u64, len: u64, kind: RegionKind, stack_id: i32) {
        if len == 0 {
            return;
        }
        self.unmap(start, len);
        self.mappings.insert(start, Region { len, kind, stack_id });
    }

    /// Removes `[start, start + len)`, splitting mappings that straddle its edges.
    pub fn unmap(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        let overlapping: Vec<u64> = self
            .mappings
            .range(..end)
            .rev()
            .take_while(|(first, region)| **first + region.len > start)
            .map(|(&first, _)| first)
            .collect();
        for first in overlapping {
            let Some(region) = self.mappings.remove(&first) else { continue };
            let last = first + region.len;
            if first < start {
                self.mappings.insert(first, Region { len: start - first, ..region });
            }
            if last > end {
                self.mappings.insert(end, Region { len: last - end, ..region });
            }
        }
    }

    /// mremap: a mapping this trace holds moves or changes size, keeping its kind and stack.
    pub fn remap(&mut self, old: u64, old_len: u64, new: u64, new_len: u64) {
        let tracked = self
            .mappings
            .range(..old.saturating_add(old_len.max(1)))
            .next_back()
            .filter(|(first, region)| **first + region.len > old)
            .map(|(_, region)| *region);
        let Some(region) = tracked else { return }; // not the program's own mapping
        self.unmap(old, old_len);
        self.map(new, new_len, region.kind, region.stack_id);
    }

    /// Removes the System V segment attached at `start`.
    pub fn detach_segment(&mut self, start: u64) {
        if let Some(region) = self.mappings.get(&start).copied() {
            self.unmap(start, region.len);
        }
    }

    /// brk set the break to `now`. Growth by the program's own code counts, with its stack;
    /// a shrink gives back the most recent growth first.
    pub fn set_break(&mut self, now: u64, by_program: bool, stack_id: i32) {
        if let Some(before) = self.last_break {
            if now > before && by_program {
                self.grown.push((stack_id, now - before));
            } else if now < before {
                let mut cut = before - now;
                while cut > 0 {
                    let Some((_, bytes)) = self.grown.last_mut() else { break };
                    let taken = cut.min(*bytes);
                    *bytes -= taken;
                    cut -= taken;
                    if *bytes == 0 {
                        self.grown.pop();
                    }
                }
            }
        }
        self.last_break = Some(now);
    }

    /// Outstanding mapped bytes of each kind.
    pub fn mapped_bytes(&self, kind: RegionKind) -> u64 {
        self.mappings.values().filter(|region| region.kind == kind).map(|region| region.len).sum()
    }

    pub fn brk_bytes(&self) -> u64 {
        self.grown.iter().map(|(_, bytes)| bytes).sum()
    }

    /// (stack, kind, bytes, count) of every outstanding mapping and break growth; `None` kind
    /// for the break.
    pub fn pieces(&self) -> impl Iterator<Item = (i32, Option<RegionKind>, u64)> + '_ {
        self.mappings
            .values()
            .map(|region| (region.stack_id, Some(region.kind), region.len))
            .chain(self.grown.iter().map(|&(stack_id, bytes)| (stack_id, None, bytes)))
    }
}

/// The size of a System V shared memory segment, from `/proc/sysvipc/shm`.
pub fn sysv_segment_size(shmid: u64) -> Option<u64> {
    use procfs::Current;
    let segments = procfs::SharedMemorySegments::current().ok()?;
    segments.0.iter().find(|segment| segment.shmid == shmid).map(|segment| segment.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_unmap_splits_and_remap_moves() {
        let mut regions = Regions::default();
        regions.map(0x1000, 0x4000, RegionKind::Private, 1);
        regions.unmap(0x2000, 0x1000); // a hole in the middle
        assert_eq!(regions.mapped_bytes(RegionKind::Private), 0x3000);
        regions.remap(0x3000, 0x2000, 0x9000, 0x6000); // the right part moves and grows
        assert_eq!(regions.mapped_bytes(RegionKind::Private), 0x1000 + 0x6000);
        regions.remap(0x20000, 0x1000, 0x30000, 0x1000); // not ours: ignored
        assert_eq!(regions.mapped_bytes(RegionKind::Private), 0x7000);
        regions.map(0x9000, 0x1000, RegionKind::Shared, 2); // MAP_FIXED over part of it
        assert_eq!(regions.mapped_bytes(RegionKind::Private), 0x6000);
        assert_eq!(regions.mapped_bytes(RegionKind::Shared), 0x1000);
        regions.detach_segment(0x9000);
        assert_eq!(regions.mapped_bytes(RegionKind::Shared), 0);
    }

    #[test]
    fn break_growth_counts_only_the_programs_own() {
        let mut regions = Regions::default();
        regions.set_break(0x10000, false, 0); // the baseline
        regions.set_break(0x30000, false, 0); // malloc's arena: not counted
        regions.set_break(0x31000, true, 5); // sbrk(4096) by the program
        regions.set_break(0x33000, true, 6);
        assert_eq!(regions.brk_bytes(), 0x3000);
        regions.set_break(0x31800, true, 7); // shrinks the latest growth first
        assert_eq!(regions.brk_bytes(), 0x1800);
        assert_eq!(regions.pieces().collect::<Vec<_>>(), vec![(5, None, 0x1000), (6, None, 0x800)]);
    }
}
