//! `serve --exe` and `--cgroup`: every exec on the machine, so that the agent can tell at once
//! whether the new program is one to trace. Only the process id is sent; the agent reads the
//! rest from /proc. Loaded and attached by `serve` alone.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::RingBuf,
    programs::RawTracePointContext,
};
use memtrace_common::Counter;

use crate::emit::count;

/// Process ids that just exec'd, read by the agent.
#[map(name = "EXECS")]
static EXECS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if EXECS.output::<u32>(&tgid, 0).is_err() {
        count(Counter::RingBufferFull);
    }
    0
}
