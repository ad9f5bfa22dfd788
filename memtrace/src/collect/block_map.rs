//! The outstanding blocks of one process by address, kept small: a traced service can hold
//! millions, and the agent's memory per block is what an SRE pays for tracing it.
//!
//! Three choices keep it near 24 bytes a block plus the table's slack:
//! - a packed 16-byte record;
//! - a table split into shards that grow one at a time, so that growing never holds two copies
//!   of the whole table at once (a single table doubles by allocating the new copy before
//!   freeing the old: half again as much memory at the worst moment);
//! - shards of unequal shares, so that they do not all double at the same moment. A hash table
//!   doubles when it is 7/8 full and is then 7/16 full: with equal shares every shard is at the
//!   same point of that cycle, and the whole table costs anywhere from 29 to 57 bytes a block
//!   (25-byte entries) depending only on how many blocks there are. Shares spread evenly over a
//!   factor of two (shard `i` gets a share in proportion to 2^(i/256)) put the shards at every
//!   point of the cycle at once, and the cost stays near 41 bytes a block for any count.
//!
//! The hash is rustc's Fx hash: addresses need no protection from collision attacks, and it is
//! several times faster than the default SipHash on the agent's hottest path.
use std::sync::LazyLock;

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

/// Routes per shard on average: a block's route (12 bits of a hash of its address) picks its
/// shard, and shard `i` gets about `ROUTES / SHARDS * 2^(i/256) / 1.44` of them (11 to 22).
const ROUTE_BITS: u32 = 12;
const ROUTES: usize = 1 << ROUTE_BITS;

/// The shard of each route: shard `i`'s share of the routes in proportion to 2^(i/SHARDS),
/// given out in order along the cumulative shares.
static SHARD_OF_ROUTE: LazyLock<[u8; ROUTES]> = LazyLock::new(|| {
    let weight = |shard: usize| (shard as f64 / SHARDS as f64).exp2();
    let total: f64 = (0..SHARDS).map(weight).sum();
    let mut routes = [0u8; ROUTES];
    let (mut shard, mut below) = (0, weight(0));
    for (route, entry) in routes.iter_mut().enumerate() {
        // The route's midpoint on the scale of cumulative weight.
        let at = (route as f64 + 0.5) / ROUTES as f64 * total;
        while at > below && shard + 1 < SHARDS {
            shard += 1;
            below += weight(shard);
        }
        *entry = shard as u8;
    }
    routes
});

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

    pub fn get(&self, addr: u64) -> Option<&Block> {
        self.shards[shard_of(addr)].get(&addr)
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
        &mut self.shards[shard_of(addr)]
    }
}

fn shard_of(addr: u64) -> usize {
    usize::from(SHARD_OF_ROUTE[route(addr)])
}

/// A block's route: the top bits of a multiplicative hash of its address (with a multiplier
/// other than the Fx hash's, whose top bits the shard's own table uses).
fn route(addr: u64) -> usize {
    (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - ROUTE_BITS)) as usize
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

    #[test]
    fn shard_shares_spread_evenly_over_a_factor_of_two() {
        let mut routes = [0usize; SHARDS];
        SHARD_OF_ROUTE.iter().for_each(|&shard| routes[usize::from(shard)] += 1);
        // Each shard's share is its weight's to within one route (11.1 for the first, 22.1
        // for the last), so every shard is used and the last has twice the first's share.
        let total: f64 = (0..SHARDS).map(|shard| (shard as f64 / SHARDS as f64).exp2()).sum();
        for (shard, &count) in routes.iter().enumerate() {
            let share = ROUTES as f64 * (shard as f64 / SHARDS as f64).exp2() / total;
            assert!((count as f64 - share).abs() < 1.0, "shard {shard}: {count} routes for {share:.2}");
        }
        assert_eq!((routes[0], routes[SHARDS - 1]), (11, 22));
        assert_eq!(routes.iter().sum::<usize>(), ROUTES);
    }

    #[test]
    fn blocks_spread_over_the_shards_as_their_routes_say() {
        let mut map = BlockMap::default();
        let blocks = 1_000_000u64;
        for addr in (0..blocks).map(|i| 0x5555_0000_0000 + i * 32) {
            map.insert(addr, Block { size: 16, stack_id: 1, time_ms: 0 });
        }
        let (first, last) = (map.shards[0].len() as f64, map.shards[SHARDS - 1].len() as f64);
        let expected = |routes: f64| blocks as f64 * routes / ROUTES as f64;
        assert!((first - expected(11.0)).abs() < 0.1 * expected(11.0), "{first}");
        assert!((last - expected(22.0)).abs() < 0.1 * expected(22.0), "{last}");
    }
}
