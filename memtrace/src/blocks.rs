//! The outstanding blocks of one process by address, kept small: a traced service can hold
//! millions, and the agent's memory per block is what an SRE pays for tracing it.
//!
//! Two choices keep it near 24 bytes a block plus the table's slack: a packed 16-byte record,
//! and a table split into shards that grow one at a time, so that growing never holds two
//! copies of the whole table at once (a single table doubles by allocating the new copy
//! before freeing the old: half again as much memory at the worst moment). The hash is rustc's
//! Fx hash: addresses need no protection from collision attacks, and it is several times
//! faster than the default SipHash on the agent's hottest path.
use rustc_hash::FxHashMap;

/// One block handed out and not yet freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub size: u64,
    /// Id in the agent's stack table; negative (-errno) when the capture failed.
    pub stack_id: i32,
    /// When it was allocated, in milliseconds after the heap table's epoch.
    pub time_ms: u32,
}

const SHARDS: usize = 256;

/// Blocks by address.
#[derive(Debug)]
pub struct BlockMap {
    shards: Vec<FxHashMap<u64, Block>>,
    len: usize,
}

impl Default for BlockMap {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| FxHashMap::default()).collect(), len: 0 }
    }
}

impl BlockMap {
    /// Records a block; a block already at that address (whose free was never seen) is
    /// replaced and returned.
    pub fn insert(&mut self, addr: u64, block: Block) -> Option<Block> {
        let old = self.shard(addr).insert(addr, block);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, addr: u64) -> Option<Block> {
        let removed = self.shard(addr).remove(&addr);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn values(&self) -> impl Iterator<Item = &Block> {
        self.shards.iter().flat_map(FxHashMap::values)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Block)> {
        self.shards.iter().flat_map(|shard| shard.iter().map(|(&addr, block)| (addr, block)))
    }

    pub fn clear(&mut self) {
        self.shards.iter_mut().for_each(FxHashMap::clear);
        self.len = 0;
    }

    fn shard(&mut self, addr: u64) -> &mut FxHashMap<u64, Block> {
        // Block addresses are at least 16-byte aligned: the bits above those pick the shard.
        &mut self.shards[(addr >> 4) as usize % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_by_address_and_counted() {
        let mut map = BlockMap::default();
        let block = |size| Block { size, stack_id: 1, time_ms: 0 };
        for addr in (0..10_000u64).map(|i| 0x5555_0000_0000 + i * 32) {
            assert_eq!(map.insert(addr, block(addr & 0xff)), None);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.remove(0x5555_0000_0000 + 32).map(|b| b.size), Some(32));
        assert_eq!(map.remove(0x5555_0000_0000 + 32), None);
        assert_eq!(map.insert(0x5555_0000_0000, block(7)).map(|b| b.size), Some(0));
        assert_eq!(map.len(), 9_999);
        assert_eq!(map.values().count(), 9_999);
        assert_eq!(size_of::<Block>(), 16);
        map.clear();
        assert!(map.is_empty());
    }
}
