//! What the programs keep between calls: per-thread and per-process state (`by_id`), the
//! blocks tracked in the kernel (`block_table`), in-kernel sums per stack (`aggregate`) and
//! which blocks to record (`sampling`).
pub mod aggregate;
pub mod block_table;
pub mod by_id;
pub mod sampling;
