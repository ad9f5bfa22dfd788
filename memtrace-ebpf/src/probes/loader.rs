//! `run` mode: code the dynamic loader maps is made known to the walk before it runs.
//!
//! The loader calls `_dl_debug_state` after it has mapped objects (at startup, at each
//! `dlopen`) and before it runs their constructors: debuggers break there to read the new
//! objects. A uprobe there stops the thread with SIGSTOP when its process has mapped code the
//! agent has not applied yet (see `unwind`); memtrace, the process's ptracer, sees the stop,
//! applies the mappings, and resumes the thread without the signal. `LOADER_STOPS` tells its
//! stops from a SIGSTOP someone else sent.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal_thread},
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};

use crate::{stack::unwind, state::by_id};

const SIGSTOP: u32 = 19;

/// Threads stopped here and not yet resumed by memtrace, by thread id.
#[map(name = "LOADER_STOPS")]
static LOADER_STOPS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[uprobe]
pub fn loader_mapped(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !by_id::is_traced(pid_tgid) || !unwind::mapped_code_pending((pid_tgid >> 32) as u32) {
        return 0;
    }
    if LOADER_STOPS.insert(pid_tgid as u32, 1, 0).is_ok() {
        // SAFETY: a helper without preconditions; the signal is taken on the way back to user
        // mode, before the loader's next instruction.
        unsafe { bpf_send_signal_thread(SIGSTOP) };
    }
    0
}
