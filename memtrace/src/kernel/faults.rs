//! Attaching the page-fault programs: one perf event per CPU for each of the software events
//! `page-faults-min` and `page-faults-maj`, for every process (the programs keep only traced
//! ones). Per CPU rather than per process so that every thread and every child a target starts
//! later is covered without attaching again. The links belong to the loaded programs: they go
//! away with them.
use aya::{
    Ebpf,
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use memtrace_common::names;

use super::error::ProbeError;

/// Loads and attaches both programs on every online CPU, sampling one fault in `period`.
pub fn attach(ebpf: &mut Ebpf, period: u64) -> Result<(), ProbeError> {
    let cpus = online_cpus()
        .map_err(|(path, error)| ProbeError::Load(format!("reading the online CPUs from {path}: {error}")))?;
    for (program, event) in
        [(names::FAULT_MINOR, SoftwareEvent::PageFaultsMin), (names::FAULT_MAJOR, SoftwareEvent::PageFaultsMaj)]
    {
        let perf_event: &mut PerfEvent = ebpf
            .program_mut(program)
            .ok_or_else(|| ProbeError::Load(format!("program {program} is missing from the eBPF object")))?
            .try_into()
            .map_err(|error| ProbeError::Load(format!("{program}: {}", crate::error_text::with_causes(&error))))?;
        perf_event
            .load()
            .map_err(|error| ProbeError::Load(format!("{program}: {}", super::load_error_text(&error))))?;
        for &cpu in &cpus {
            perf_event
                .attach(
                    PerfEventConfig::Software(event),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(period),
                    false,
                )
                .map_err(|error| ProbeError::Attach {
                    function: format!("the {event:?} perf event"),
                    object: format!("CPU {cpu}"),
                    detail: crate::error_text::with_causes(&error),
                })?;
        }
        log::info!("attached {program} to {event:?} on {} CPUs, one sample every {period} faults", cpus.len());
    }
    Ok(())
}
