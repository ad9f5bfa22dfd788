//! The programs: one file per kind of call they see.
pub mod alloc;
pub mod execs;
pub mod faults;
pub mod floor;
pub mod free;
pub mod loader;
pub mod mappings;
pub mod return_stack;
