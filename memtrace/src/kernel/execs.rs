//! `serve --exe`/`--cgroup`: the process ids that exec, from the raw tracepoint
//! `sched_process_exec`, so that a new process of a selected program is attached to within
//! milliseconds of its exec rather than at the next scan of /proc. The tracepoint's link belongs
//! to its program and goes with the probes.
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use memtrace_common::names;
use tokio::io::unix::AsyncFd;

use super::{
    error::{ProbeError, map_error, missing},
    load_error_text, loading,
    ring_buffer::watch_readable,
};

/// The agent's end of the `EXECS` ring buffer.
pub struct ExecWatch {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl ExecWatch {
    /// Loads and attaches `process_exec`, and takes its ring buffer.
    pub(super) fn start(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let program = loading::raw_tracepoint(ebpf, names::PROCESS_EXEC)?;
        program
            .load()
            .map_err(|error| ProbeError::Load(format!("{}: {}", names::PROCESS_EXEC, load_error_text(&error))))?;
        loading::attach_raw_tracepoint(ebpf, names::PROCESS_EXEC, "sched_process_exec")?;
        let map = ebpf.take_map(names::EXECS).ok_or_else(|| missing(names::EXECS))?;
        let ring = RingBuf::try_from(map).map_err(|error| map_error(names::EXECS, error))?;
        let ring = watch_readable(ring)
            .map_err(|error| ProbeError::Map { map: names::EXECS, detail: format!("watching it: {error}") })?;
        Ok(Self { ring })
    }

    /// Waits for execs and returns the process ids seen since the last call.
    pub async fn next(&mut self) -> std::io::Result<Vec<u32>> {
        let mut guard = self.ring.readable_mut().await?;
        let mut pids = Vec::new();
        while let Some(record) = guard.get_inner_mut().next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&record[..]) {
                pids.push(u32::from_ne_bytes(bytes));
            }
        }
        guard.clear_ready();
        Ok(pids)
    }
}
