//! Where the probes go: which object provides each allocator function a target calls
//! (`allocator`), and which instruction of it to probe (`probe_site`).
pub mod allocator;
pub mod libraries;
pub mod probe_site;
