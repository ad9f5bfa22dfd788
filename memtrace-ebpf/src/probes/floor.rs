//! Empty programs, attached at exactly the points memtrace probes by `cargo xtask bench` to
//! measure the floor: what the probes cost before memtrace's own work.
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

#[uprobe]
pub fn floor_enter(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn floor_exit(_ctx: RetProbeContext) -> u32 {
    0
}
