//! User stacks as they arrive with events, each distinct one kept once under an id. The kernel
//! sends every stack whole (no kernel stack map, whose hash buckets collide and drop stacks).
use rustc_hash::FxHashMap;

#[derive(Debug, Default)]
pub struct StackTable {
    /// Fx hash, not SipHash: one lookup per event, and return addresses need no protection.
    ids: FxHashMap<Box<[u64]>, i32>,
    stacks: Vec<Box<[u64]>>,
    /// The same frames walked to a cut (the unwinder could not go on) are another stack.
    truncated_ids: FxHashMap<Box<[u64]>, i32>,
    truncated: Vec<bool>,
    /// Ids released (`serve` forgetting exited processes), given out again first.
    free: Vec<i32>,
}

impl StackTable {
    /// The id of this stack (innermost address first), given on first sight.
    pub fn intern(&mut self, addresses: &[u64]) -> i32 {
        self.intern_walk(addresses, false)
    }

    /// The id of a stack as walked: complete, or `truncated` after its last frame.
    pub fn intern_walk(&mut self, addresses: &[u64], truncated: bool) -> i32 {
        let ids = if truncated { &mut self.truncated_ids } else { &mut self.ids };
        if let Some(&id) = ids.get(addresses) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                let index = id as usize;
                self.stacks[index] = addresses.into();
                self.truncated[index] = truncated;
                id
            }
            None => {
                self.stacks.push(addresses.into());
                self.truncated.push(truncated);
                self.stacks.len() as i32 - 1
            }
        };
        ids.insert(addresses.into(), id);
        id
    }

    /// Forgets stacks nothing refers to any more; their ids are given to new stacks.
    pub fn release(&mut self, released: impl IntoIterator<Item = i32>) {
        for id in released {
            let Some(index) = usize::try_from(id).ok().filter(|&index| index < self.stacks.len()) else { continue };
            let stack = std::mem::take(&mut self.stacks[index]);
            let ids = if self.truncated[index] { &mut self.truncated_ids } else { &mut self.ids };
            if ids.get(&stack) == Some(&id) {
                ids.remove(&stack);
                self.free.push(id);
            }
        }
    }

    /// Stacks held (for the agent's own accounting).
    pub fn len(&self) -> usize {
        self.stacks.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the walk of stack `id` was cut short.
    pub fn is_truncated(&self, id: i32) -> bool {
        usize::try_from(id).ok().and_then(|index| self.truncated.get(index)).copied().unwrap_or(false)
    }

    pub fn get(&self, id: i32) -> Option<&[u64]> {
        usize::try_from(id).ok().and_then(|index| self.stacks.get(index)).map(|stack| &stack[..])
    }
}

/// The frames that follow an event in its record, read in place when they are aligned (ring
/// buffer records are 8-byte aligned, and so is `Event`'s size), copied otherwise.
pub fn frames(bytes: &[u8]) -> std::borrow::Cow<'_, [u64]> {
    // SAFETY: any bytes are a valid u64; align_to only hands out the aligned middle.
    let (head, middle, tail) = unsafe { bytes.align_to::<u64>() };
    if head.is_empty() && tail.is_empty() {
        return std::borrow::Cow::Borrowed(middle);
    }
    std::borrow::Cow::Owned(
        bytes.chunks_exact(8).map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]))).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_ids_go_to_new_stacks() {
        let mut table = StackTable::default();
        let a = table.intern(&[1, 2]);
        let b = table.intern_walk(&[3], true);
        assert_eq!((a, b, table.len()), (0, 1, 2));
        table.release([a, 7, -1]);
        assert_eq!(table.len(), 1);
        let c = table.intern(&[4, 5]);
        assert_eq!(c, a, "the released id is reused");
        assert_eq!(table.get(c), Some(&[4, 5][..]));
        assert_eq!(table.intern(&[1, 2]), 2, "the released stack is new again");
        assert_eq!(table.intern_walk(&[3], true), b);
        // Releasing twice does not free the id twice.
        table.release([b, b]);
        assert_eq!(table.intern(&[9]), b);
        assert_ne!(table.intern(&[10]), b);
    }

    #[test]
    fn equal_stacks_share_an_id_and_different_ones_do_not() {
        let mut table = StackTable::default();
        let a = table.intern(&[1, 2, 3]);
        let b = table.intern(&[1, 2, 4]);
        assert_eq!(table.intern(&[1, 2, 3]), a);
        assert_ne!(a, b);
        assert_eq!(table.get(b), Some(&[1u64, 2, 4][..]));
        assert_eq!(table.get(-14), None);
        let cut = table.intern_walk(&[1, 2, 3], true);
        assert_ne!(cut, a);
        assert!(table.is_truncated(cut) && !table.is_truncated(a) && !table.is_truncated(-1));
        assert_eq!(table.get(cut), Some(&[1u64, 2, 3][..]));
        let words = [1u64, 2];
        // SAFETY: viewing two u64s as their 16 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 16) };
        assert_eq!(&*frames(bytes), &[1, 2]);
        assert_eq!(&*frames(&bytes[..8]), &[1]);
    }
}
