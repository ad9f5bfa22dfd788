//! Unwind tables for the kernel's stack walk (`--unwind auto|tables`): code built without
//! frame pointers (Debian's libc, any -O2 build, Rust release builds) unwound the way
//! debuggers and valgrind do, by its call-frame information.
//!
//! For each module a traced process maps, the agent reads `.eh_frame` (and `.debug_frame`)
//! once (`cfi`), merges it into rows with a page index (`table`), and copies them into the
//! kernel's global arrays (`kernel`). Tables are keyed by file identity: every process mapping
//! a file shares its table. Each process's executable mappings (start, end, bias, table) are
//! kept current in a kernel map: when tracing starts, at exec (run mode holds the process
//! there), and when an executable mmap event arrives.
//!
//! Code can run before the agent has applied its mapping (a library's constructors, the call
//! right after `dlopen`, or simply a short program running ahead of the agent). The kernel
//! counts executable mmaps per process and, when a walk meets a pc in no mapping it knows while
//! mmaps are pending, sends the registers and a copy of the stack above them; the agent applies
//! the mmap event (which comes first in the ring buffer) and finishes the walk (`finish`) with
//! the same step function. What cannot be unwound is marked truncated and counted, never
//! guessed.
mod cfi;
mod finish;
mod kernel;
mod loader;
mod module;
mod records;
mod table;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, fs::File, os::unix::fs::MetadataExt, path::PathBuf};

pub use kernel::{Capacity, KernelTables};
pub use loader::debug_state_point;
use memtrace_common::unwind::{ExecMapping, MAX_EXEC_MAPPINGS, NO_TABLE, StackCopy, UNWALKABLE, UnwindCounter};
pub use records::{apply_mapping_event, carries_stack, stack_of_record};

pub use crate::report::unwind::{Method, ModuleReport, UnwindReport};
use crate::target::maps::{self as procmaps, Mapping};

/// A file's identity: the same file mapped by many processes, or by one under two paths, has
/// one table.
type FileId = (u64, u64);

struct Module {
    path: String,
    /// (file offset, size, virtual address) of its loadable segments; `None` when unreadable.
    segments: Option<module::Segments>,
    /// Its table's id in the kernel; `None`: stepped by frame pointer.
    table: Option<u32>,
    rows: u64,
    reason: Option<String>,
}

struct Process {
    mappings: Vec<ExecMapping>,
    /// The executable mmaps the mappings include (see `ProcessMappings`).
    exec_mmaps: u64,
}

/// The agent's side of walking by tables.
pub struct Unwinder {
    kernel: KernelTables,
    method: Method,
    budget: u64,
    debug_dirs: Vec<PathBuf>,
    modules: HashMap<FileId, Module>,
    processes: HashMap<u32, Process>,
    finished: u64,
    truncated_here: u64,
    not_fitting: u64,
    mappings_left_out: u64,
}

impl Unwinder {
    pub fn new(kernel: KernelTables, method: Method, budget: u64, debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            kernel,
            method,
            budget,
            debug_dirs,
            modules: HashMap::new(),
            processes: HashMap::new(),
            finished: 0,
            truncated_here: 0,
            not_fitting: 0,
            mappings_left_out: 0,
        }
    }

    /// Reads `pid`'s executable mappings now (tracing starts, or it exec'd and is held) and
    /// gives them to the kernel, with a table for every module new to memtrace.
    pub fn track(&mut self, pid: u32) {
        // Counted before the mappings are read: they include at least those mmaps.
        let exec_mmaps = self.kernel.exec_mmaps(pid);
        self.refresh(pid, exec_mmaps);
    }

    /// `pid` mapped code (an executable mmap event, the `exec_mmaps`-th of the process).
    pub fn mapped_code(&mut self, pid: u32, exec_mmaps: u64) {
        let before = self.processes.get(&pid).map_or(0, |process| process.exec_mmaps);
        self.refresh(pid, exec_mmaps.max(before));
    }

    /// Whether thread `tid` stopped (SIGSTOP) at the loader's announcement of new code, for
    /// memtrace (see `loader`); its record of the stop is cleared.
    pub fn loader_stopped(&mut self, tid: u32) -> bool {
        self.kernel.take_loader_stop(tid)
    }

    /// `pid` ended: its mappings are forgotten (the tables stay for other processes).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.kernel.forget_process(pid);
    }

    fn refresh(&mut self, pid: u32, exec_mmaps: u64) {
        let maps = match procmaps::read(pid) {
            Ok(maps) => maps,
            Err(error) => {
                log::debug!("unwind: cannot read the mappings of process {pid}: {error}");
                return;
            }
        };
        let mut mappings: Vec<ExecMapping> =
            maps.iter().filter(|mapping| mapping.executable).map(|mapping| self.exec_mapping(pid, mapping)).collect();
        mappings.sort_by_key(|mapping| mapping.start);
        if mappings.len() > MAX_EXEC_MAPPINGS {
            self.mappings_left_out += (mappings.len() - MAX_EXEC_MAPPINGS) as u64;
            log::warn!(
                "process {pid} has {} executable mappings; stacks through the {} beyond the first {MAX_EXEC_MAPPINGS} end truncated",
                mappings.len(),
                mappings.len() - MAX_EXEC_MAPPINGS
            );
            mappings.truncate(MAX_EXEC_MAPPINGS);
        }
        if let Err(error) = self.kernel.set_process(pid, &mappings, exec_mmaps) {
            log::warn!("cannot give the kernel the mappings of process {pid}: {error}");
            return;
        }
        self.processes.insert(pid, Process { mappings, exec_mmaps });
    }

    /// The kernel's view of one executable mapping, building its module's table the first time.
    fn exec_mapping(&mut self, pid: u32, mapping: &Mapping) -> ExecMapping {
        let without_table = if self.method == Method::Tables { UNWALKABLE } else { NO_TABLE };
        let mut exec =
            ExecMapping { start: mapping.start, end: mapping.end, bias: 0, table: without_table, _padding: 0 };
        // Anonymous code (a JIT's), the vdso: by frame pointer.
        if !mapping.is_file() {
            return exec;
        }
        let map_file = mapping.map_file(pid);
        let Ok(metadata) = std::fs::metadata(&map_file) else { return exec };
        let id = (metadata.dev(), metadata.ino());
        if !self.modules.contains_key(&id) {
            let path = mapping.path.clone().unwrap_or_default();
            let module = self.load_module(&map_file, path);
            self.modules.insert(id, module);
        }
        let Some(module) = self.modules.get(&id) else { return exec };
        let bias = module.segments.as_ref().and_then(|segments| module::bias(segments, mapping.start, mapping.offset));
        if let (Some(table), Some(bias)) = (module.table, bias) {
            exec.table = table;
            exec.bias = bias;
        }
        exec
    }

    /// Builds and places a module's table; one that cannot be built or placed is walked by
    /// frame pointer, and says why with -v.
    fn load_module(&mut self, map_file: &std::path::Path, path: String) -> Module {
        let file = match File::open(map_file) {
            Ok(file) => file,
            Err(error) => return self.without_table(path, None, format!("cannot open it: {error}")),
        };
        let segments = module::segments(&file).ok();
        let built = match module::build(&file, &path, &self.debug_dirs) {
            Ok(built) => built,
            Err(error) => return self.without_table(path, segments, error),
        };
        let rows = built.table.rows.len() as u64;
        match self.kernel.place(&built.table) {
            Ok(id) => {
                log::info!(
                    "unwind: {path}: {rows} rows from {} FDEs{}{}",
                    built.counts.fdes,
                    built.debug_file.as_ref().map_or(String::new(), |file| format!(" (and {})", file.display())),
                    match built.counts.unsupported {
                        0 => String::new(),
                        spans => format!(", {spans} with rules the walk does not follow"),
                    }
                );
                Module { path, segments, table: Some(id), rows, reason: None }
            }
            Err(error) => {
                self.not_fitting += 1;
                log::warn!(
                    "unwind: no room for the table of {path} ({rows} rows): {error}; its frames are walked by frame pointer"
                );
                self.without_table(path, segments, error.to_string())
            }
        }
    }

    fn without_table(&self, path: String, segments: Option<module::Segments>, reason: String) -> Module {
        log::info!("unwind: {path}: no table ({reason}): walked by frame pointer");
        Module { path, segments, table: None, rows: 0, reason: Some(reason) }
    }

    /// Finishes a walk the kernel handed over, appending to `frames` (up to `limit` in all);
    /// returns whether the stack is truncated.
    pub fn finish(&mut self, pid: u32, copy: &StackCopy, frames: &mut Vec<u64>, limit: usize) -> bool {
        let mappings = self.processes.get(&pid).map_or(&[][..], |process| &process.mappings[..]);
        let kernel = &self.kernel;
        let truncated = finish::finish(mappings, |table, address| kernel.row_in(table, address), copy, frames, limit);
        self.finished += 1;
        self.truncated_here += u64::from(truncated);
        truncated
    }

    /// What the report says about unwinding.
    pub fn report(&self) -> UnwindReport {
        let counters = self.kernel.counters();
        let mut modules: Vec<ModuleReport> = self
            .modules
            .values()
            .map(|module| ModuleReport {
                path: module.path.clone(),
                method: if module.table.is_some() { "tables" } else { "frame pointer" }.to_owned(),
                rows: module.rows,
                reason: module.reason.clone(),
            })
            .collect();
        modules.sort_by(|a, b| a.path.cmp(&b.path));
        UnwindReport {
            method: self.method,
            modules,
            table_bytes: self.kernel.bytes_used(),
            table_budget_bytes: self.budget,
            modules_not_fitting: self.not_fitting,
            stacks_walked: counters[UnwindCounter::Walks as usize],
            stacks_truncated: counters[UnwindCounter::Truncated as usize] + self.truncated_here,
            stacks_finished_by_memtrace: self.finished,
            stacks_truncated_by_memtrace: self.truncated_here,
            table_steps: counters[UnwindCounter::TableSteps as usize],
            frame_pointer_steps: counters[UnwindCounter::FramePointerSteps as usize],
            mappings_left_out: self.mappings_left_out,
        }
    }
}
