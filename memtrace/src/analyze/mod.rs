//! What the collected state means: which blocks are lost and how (`reachability`), what the
//! kernel really backs (`memory_picture`), and the CI decision over a report (`check`).
pub mod check;
pub mod memory_picture;
pub mod reachability;
