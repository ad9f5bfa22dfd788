//! The one list of everything memtrace counts instead of tracing: what the kernel side could
//! not deliver or degraded (`Counter`, per-CPU slots of the `COUNTERS` map), and the records the
//! agent could not decode. Every place that shows a count (the report's `lost`, the text
//! report, the status line, the warning on stderr) derives from this list, so they agree.

/// Per-CPU counters the kernel side keeps, indexes into the `COUNTERS` map.
/// Everything that is dropped or degraded is counted here; nothing is lost silently.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// No room in the ring buffer: the event was dropped (the agent fell behind).
    RingBufferFull = 0,
    /// `bpf_get_stack` failed: the event was sent without a stack.
    StackCaptureFailed = 1,
    /// The in-flight table was full: that allocation was not recorded.
    InFlightFull = 2,
    /// An in-flight entry whose return never came (longjmp, a missed uretprobe) was replaced.
    StaleInFlight = 3,
    /// `free(NULL)`: not an error, counted for the report.
    NullFree = 4,
    /// A user pointer could not be read (posix_memalign's result): that allocation is lost.
    ArgumentUnreadable = 5,
    /// The block table and its overflow map were full (`--combined`, `--sample-bytes`): that
    /// block is not tracked.
    LiveBlocksFull = 6,
    /// `--combined`: a free of a block the kernel did not track (allocated before the trace).
    UnknownFree = 7,
    /// A realloc that failed and kept its block, seen by the kernel when it splits reallocs
    /// (`--combined`, `--sample-bytes`, size filters).
    FailedRealloc = 8,
    /// `--combined`: `TOTALS_SLOTS` or `STACKS` was full: a block from a new stack is not tracked.
    StackSumsFull = 9,
}

/// How a count is named and what it means for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    /// Its key in the JSON report (`summary.lost.KEY` for a loss).
    pub key: &'static str,
    /// For people, in the text report and warnings.
    pub words: &'static str,
    /// The trace missed something: counted in `summary.lost_events`, numbers are low by it.
    pub loss: bool,
    /// What to do about it (empty when nothing needs doing).
    pub hint: &'static str,
}

impl Counter {
    pub const ALL: [Counter; 10] = [
        Counter::RingBufferFull,
        Counter::StackCaptureFailed,
        Counter::InFlightFull,
        Counter::StaleInFlight,
        Counter::NullFree,
        Counter::ArgumentUnreadable,
        Counter::LiveBlocksFull,
        Counter::UnknownFree,
        Counter::FailedRealloc,
        Counter::StackSumsFull,
    ];

    pub const fn info(self) -> CounterInfo {
        let (key, words, loss, hint) = match self {
            Counter::RingBufferFull => ("ring_buffer_full", "ring buffer full", true, "raise --ring-buffer-size"),
            Counter::StackCaptureFailed => ("stack_capture_failed", "stack capture failed", true, ""),
            Counter::InFlightFull => ("in_flight_full", "in-flight table full", true, ""),
            Counter::StaleInFlight => ("stale_in_flight", "returns missed", true, ""),
            Counter::NullFree => ("null_frees", "frees of NULL", false, ""),
            Counter::ArgumentUnreadable => ("argument_unreadable", "results unreadable", true, ""),
            Counter::LiveBlocksFull => ("live_blocks_full", "kernel block table full", true, "raise --live-blocks"),
            Counter::UnknownFree => ("unknown_frees", "frees of blocks not held", false, ""),
            Counter::FailedRealloc => ("failed_reallocs", "failed reallocs", false, ""),
            Counter::StackSumsFull => ("stack_sums_full", "kernel stack sums full", true, "raise --stack-slots"),
        };
        CounterInfo { key, words, loss, hint }
    }
}

/// Number of slots in the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

/// Ring-buffer records the agent could not decode: a loss the agent counts itself.
pub const UNDECODABLE: CounterInfo = CounterInfo { key: "malformed", words: "undecodable", loss: true, hint: "" };

/// Every loss, in the order reports list them: the kernel's, then the agent's own.
pub const LOSSES: [CounterInfo; 8] = {
    let mut losses = [UNDECODABLE; 8];
    let mut next = 0;
    let mut index = 0;
    while index < Counter::ALL.len() {
        let info = Counter::ALL[index].info();
        if info.loss {
            losses[next] = info;
            next += 1;
        }
        index += 1;
    }
    // The agent's own loss comes last; the array's length is checked to be exact.
    assert!(next == losses.len() - 1, "LOSSES must hold every loss counter and UNDECODABLE");
    losses
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_index_their_own_slots_and_have_distinct_keys() {
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot);
        }
        for (index, a) in LOSSES.iter().enumerate() {
            assert!(a.loss);
            for b in &LOSSES[index + 1..] {
                assert_ne!(a.key, b.key);
            }
        }
        assert_eq!(LOSSES[LOSSES.len() - 1], UNDECODABLE);
    }
}
