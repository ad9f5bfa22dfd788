//! Loading the programs into the kernel, side by side: the verifier checks each program in the
//! thread that loads it, and those that walk stacks take tens of milliseconds each, most of
//! memtrace's start.
use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{Program, ProgramError, RawTracePoint},
};
use memtrace_common::{names, unwind::names as unwind_names};

use super::{
    error::{ProbeError, map_error, missing},
    load_error_text,
};

/// The uprobe programs, attached later per process.
const UPROBES: [&str; 15] = [
    names::SIZE_ENTER,
    names::CALLOC_ENTER,
    names::ALIGNED_ENTER,
    names::REALLOC_ENTER,
    names::REALLOCARRAY_ENTER,
    names::POSIX_MEMALIGN_ENTER,
    names::ALLOC_EXIT,
    names::FREE_ENTER,
    names::DELETE_ENTER,
    names::WRAPPER_ENTER,
    names::WRAPPER_EXIT,
    names::RETURN_STACK,
    names::FLOOR_ENTER,
    names::FLOOR_EXIT,
    unwind_names::LOADER_MAPPED,
];

/// Loads the uprobe programs (for uprobe_multi links when `multi`) and, unless `empty` (the
/// floor measures the uprobes alone), loads and attaches the raw syscall tracepoints.
pub(super) fn load_programs(ebpf: &mut Ebpf, multi: bool, empty: bool) -> Result<(), ProbeError> {
    let tracepoints: &[(&str, &str)] = if empty { &[] } else { &names::SYSCALL_TRACEPOINTS };
    let wanted = |name: &str| UPROBES.contains(&name) || tracepoints.iter().any(|&(program, _)| program == name);
    let mut found = 0;
    std::thread::scope(|scope| {
        let loads: Vec<_> = ebpf
            .programs_mut()
            .filter(|(name, _)| wanted(name))
            .map(|(name, program)| {
                found += 1;
                scope.spawn(move || load(program, multi).map_err(|error| (name.to_owned(), error)))
            })
            .collect();
        for loading in loads {
            match loading.join() {
                Ok(Ok(())) => {}
                Ok(Err((name, error))) => {
                    return Err(ProbeError::Load(format!("{name}: {}", load_error_text(&error))));
                }
                Err(_) => return Err(ProbeError::Load("a thread loading a program panicked".to_owned())),
            }
        }
        Ok(())
    })?;
    if found != UPROBES.len() + tracepoints.len() {
        return Err(ProbeError::Load("the eBPF object lacks some of memtrace's programs".to_owned()));
    }
    install_return_stack(ebpf)?;
    for &(program, tracepoint) in tracepoints {
        // Raw syscall tracepoints fire for every process; the programs keep only traced ones.
        attach_raw_tracepoint(ebpf, program, tracepoint)?;
    }
    Ok(())
}

/// The loaded object's raw tracepoint program `program`.
pub(super) fn raw_tracepoint<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut RawTracePoint, ProbeError> {
    ebpf.program_mut(program)
        .ok_or_else(|| ProbeError::Load(format!("program {program} is missing from the eBPF object")))?
        .try_into()
        .map_err(|error| ProbeError::Load(format!("{program}: {}", crate::error_text::with_causes(&error))))
}

/// Attaches the loaded raw tracepoint program `program` to `tracepoint`; the link belongs to the
/// program and goes with it.
pub(super) fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), ProbeError> {
    raw_tracepoint(ebpf, program)?.attach(tracepoint).map(|_| ()).map_err(|error| {
        ProbeError::Load(format!(
            "attaching to the raw tracepoint {tracepoint}: {}",
            crate::error_text::with_causes(&error)
        ))
    })
}

/// Puts `return_stack` where the return probes tail-call it. The agent keeps the array's map
/// open for as long as it holds the programs: the kernel empties a program array when its last
/// descriptor closes.
fn install_return_stack(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let walker = ebpf
        .program(names::RETURN_STACK)
        .ok_or_else(|| ProbeError::Load(format!("program {} is missing from the eBPF object", names::RETURN_STACK)))?
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|error| ProbeError::Load(format!("{}: {}", names::RETURN_STACK, load_error_text(&error))))?;
    let map = ebpf.map_mut(names::RETURN_STACK_PROGRAM).ok_or_else(|| missing(names::RETURN_STACK_PROGRAM))?;
    let mut programs = ProgramArray::try_from(map).map_err(|error| map_error(names::RETURN_STACK_PROGRAM, error))?;
    programs.set(0, &walker, 0).map_err(|error| map_error(names::RETURN_STACK_PROGRAM, error))
}

fn load(program: &mut Program, multi: bool) -> Result<(), ProgramError> {
    match program {
        Program::UProbe(uprobe) if multi => uprobe.load_multi(),
        Program::UProbe(uprobe) => uprobe.load(),
        Program::RawTracePoint(tracepoint) => tracepoint.load(),
        // Only the programs above are picked.
        _ => Ok(()),
    }
}
