//! How stacks were walked (the report's `unwind`): by unwind tables built from each module's
//! call-frame information, by frame pointer, and what could not be walked.
use serde::{Deserialize, Serialize};

/// How user stacks are walked (`--unwind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// By unwind tables where a module has them, by frame pointer where it has none.
    #[default]
    Auto,
    /// By unwind tables only: a frame in a module without one ends the walk, truncated.
    Tables,
    /// By frame pointer only, as before unwind tables: stacks stop at code built without them.
    #[value(name = "fp")]
    #[serde(rename = "fp")]
    FramePointer,
}

/// What became of one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModuleReport {
    pub path: String,
    /// `tables` or `frame pointer`.
    pub method: String,
    /// Rows in its table (0 without one).
    pub rows: u64,
    /// Why it has no table, when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How stacks were walked, for the report (JSON `unwind`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnwindReport {
    pub method: Method,
    /// Every module that had executable code in a traced process.
    pub modules: Vec<ModuleReport>,
    /// Kernel memory the tables took (rows and page index), and how much there was.
    pub table_bytes: u64,
    pub table_budget_bytes: u64,
    /// Modules whose table did not fit in `--unwind-memory` (walked by frame pointer).
    pub modules_not_fitting: u64,
    /// Stacks the kernel walked by tables, of them cut short, and handed to memtrace to finish.
    pub stacks_walked: u64,
    pub stacks_truncated: u64,
    pub stacks_finished_by_memtrace: u64,
    /// Of those handed over, the ones memtrace could not finish either (also truncated).
    pub stacks_truncated_by_memtrace: u64,
    /// Frames stepped by table row and by frame pointer, in the kernel.
    pub table_steps: u64,
    pub frame_pointer_steps: u64,
    /// Executable mappings beyond the kernel's room for one process (walks through them end
    /// truncated).
    pub mappings_left_out: u64,
}
