//! Loading memtrace's eBPF programs and attaching them to a target's allocator.
//!
//! Every link lives inside the `Probes` value: dropping it, or memtrace exiting for any reason
//! (the kernel closes the perf event fds), removes every probe.
use std::num::NonZeroU32;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{UProbe, uprobe::UProbeScope},
};
use memtrace_common::{Counter, names};
use thiserror::Error;
use crate::{allocator::Allocator, events::watch_readable};

/// The kernel-side object built by `build.rs` from `memtrace-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// Settings fixed at load time.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub ring_buffer_bytes: u32,
    pub stack_slots: u32,
    /// Some target's operator delete will be probed: `free` must then check delete's marks.
    pub outer_frees: bool,
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("loading memtrace's eBPF programs into the kernel failed: {0}")]
    Load(String),
    #[error("attaching to {function} in {object} failed: {detail}")]
    Attach { function: String, object: String, detail: String },
    #[error("reading the kernel-side map {map} failed: {detail}")]
    Map { map: &'static str, detail: String },
}

/// memtrace's programs, loaded, with their links and maps.
pub struct Probes {
    ebpf: Ebpf,
}

/// How many events the kernel side dropped or degraded, by reason, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ring_buffer_full: u64,
    pub stack_capture_failed: u64,
    pub in_flight_full: u64,
    pub stale_in_flight: u64,
    pub argument_unreadable: u64,
    pub null_frees: u64,
}

impl Probes {
    /// Loads the programs and maps (nothing is attached yet).
    pub fn load(settings: ProbeSettings) -> Result<Self, ProbeError> {
        // A ring buffer must be a power-of-two number of pages.
        let ring_bytes = settings.ring_buffer_bytes.max(4096).next_power_of_two();
        let outer_frees = u8::from(settings.outer_frees);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, ring_bytes)
            .map_max_entries(names::STACKS, settings.stack_slots.max(1))
            .override_global(names::HAS_OUTER_FREES, &outer_frees, true)
            .load(EBPF_OBJECT)
            .map_err(|error| ProbeError::Load(format!("{error:#}")))?;
        for name in [
            names::SIZE_ENTER,
            names::CALLOC_ENTER,
            names::ALIGNED_ENTER,
            names::REALLOC_ENTER,
            names::REALLOCARRAY_ENTER,
            names::POSIX_MEMALIGN_ENTER,
            names::ALLOC_EXIT,
            names::FREE_ENTER,
            names::DELETE_ENTER,
        ] {
            uprobe(&mut ebpf, name)?
                .load()
                .map_err(|error| ProbeError::Load(format!("{name}: {error:#}")))?;
        }
        Ok(Self { ebpf })
    }

    /// Starts forwarding kernel-side log records (aya-log) to the `log` crate.
    pub fn forward_kernel_logs(&mut self) {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => match watch_readable(logger) {
                Ok(mut logger) => {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = logger.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(error) => log::warn!("kernel-side log unavailable: {error}"),
            },
            Err(error) => log::debug!("kernel-side log unavailable: {error}"),
        }
    }

    /// Attaches the entry (and, for allocating functions, return) probes to every allocator
    /// function, for `pid` only.
    pub fn attach(&mut self, allocator: &Allocator, pid: NonZeroU32) -> Result<(), ProbeError> {
        for point in &allocator.probes {
            let entry = point.shape.entry_program();
            let programs = std::iter::once(entry).chain(point.shape.allocates().then_some(names::ALLOC_EXIT));
            for program in programs {
                uprobe(&mut self.ebpf, program)?
                    .attach(point.file_offset, &point.object.path, UProbeScope::OneProcess(pid))
                    .map_err(|error| ProbeError::Attach {
                        function: point.symbol.clone(),
                        object: point.object.name.clone(),
                        detail: format!("{error:#}"),
                    })?;
                log::info!(
                    "attached {program} to {} at {:#x} in {} for pid {pid}",
                    point.symbol,
                    point.file_offset,
                    point.object.name
                );
            }
        }
        Ok(())
    }

    /// Takes the ring buffer the events arrive on (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map(names::EVENTS).ok_or_else(|| missing(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|error| map_error(names::EVENTS, error))
    }

    /// Takes the stack map (once); it stays valid after the probes are detached.
    pub fn take_stacks(&mut self) -> Result<StackTraceMap<MapData>, ProbeError> {
        let map = self.ebpf.take_map(names::STACKS).ok_or_else(|| missing(names::STACKS))?;
        StackTraceMap::try_from(map).map_err(|error| map_error(names::STACKS, error))
    }

    /// Reads the kernel side's drop counters.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or_else(|| missing(names::COUNTERS))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|error| map_error(names::COUNTERS, error))?;
        let read = |counter: Counter| -> Result<u64, ProbeError> {
            let values =
                array.get(&(counter as u32), 0).map_err(|error| map_error(names::COUNTERS, error))?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters {
            ring_buffer_full: read(Counter::RingBufferFull)?,
            stack_capture_failed: read(Counter::StackCaptureFailed)?,
            in_flight_full: read(Counter::InFlightFull)?,
            stale_in_flight: read(Counter::StaleInFlight)?,
            argument_unreadable: read(Counter::ArgumentUnreadable)?,
            null_frees: read(Counter::NullFree)?,
        })
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or_else(|| ProbeError::Load(format!("program {name} is missing from the eBPF object")))?
        .try_into()
        .map_err(|error| ProbeError::Load(format!("{name}: {error:#}")))
}

fn missing(map: &'static str) -> ProbeError {
    ProbeError::Map { map, detail: "missing from the eBPF object".into() }
}

fn map_error(map: &'static str, error: aya::maps::MapError) -> ProbeError {
    ProbeError::Map { map, detail: format!("{error:#}") }
}
