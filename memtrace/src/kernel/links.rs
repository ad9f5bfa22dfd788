//! The uprobes' links, owned: made per program and file, and dropped in an order that keeps
//! every call seen whole, side by side so that the kernel's waits overlap.
use std::os::fd::OwnedFd;

use aya::programs::uprobe::UProbeLink;

/// One attachment of a program; dropping it removes the probes.
#[expect(dead_code, reason = "each link is held only to be dropped: dropping it removes its probes")]
pub(super) enum Link {
    /// A uprobe_multi link: one program at every offset it needs in one file (Linux 6.6).
    Multi(OwnedFd),
    /// One perf-event uprobe: one program at one offset (older kernels, and
    /// `--perf-event-uprobes`).
    Perf(UProbeLink),
}

/// The links made for one process (or for all), entry and return probes apart.
#[derive(Default)]
pub(super) struct Links {
    entries: Vec<Link>,
    returns: Vec<Link>,
}

impl Links {
    pub(super) fn add(&mut self, link: Link, at_return: bool) {
        match at_return {
            true => self.returns.push(link),
            false => self.entries.push(link),
        }
    }

    pub(super) fn extend(&mut self, other: Links) {
        self.entries.extend(other.entries);
        self.returns.extend(other.returns);
    }

    /// The entry probes first, then the return probes: a call that entered while both were
    /// attached is still seen returning, and none enters once only its return probe is left
    /// (its in-flight state would otherwise be counted as a return missed).
    pub(super) fn drop_in_order(self) {
        drop_together(self.entries);
        drop_together(self.returns);
    }

    /// Entry and return probes in one round, for a process that has ended: it has no call in
    /// flight, and one round of the kernel's waits is half of two.
    pub(super) fn drop_at_once(mut self) {
        self.entries.append(&mut self.returns);
        drop_together(self.entries);
    }
}

/// Drops links concurrently. Removing a link waits for the kernel's grace periods (a tenth of
/// a second or so): one after another the waits add up, side by side uprobe_multi links'
/// overlap. (Perf-event uprobes are removed one at a time under the kernel's `event_mutex`
/// whatever memtrace does.)
fn drop_together(links: Vec<Link>) {
    const THREADS: usize = 64;
    let per_thread = links.len().div_ceil(THREADS).max(1);
    let mut links = links;
    std::thread::scope(|scope| {
        while !links.is_empty() {
            let batch: Vec<Link> = links.drain(..per_thread.min(links.len())).collect();
            scope.spawn(move || drop(batch));
        }
    });
}
