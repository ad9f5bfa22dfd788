//! Empty library target: it lets `memtrace` declare this crate as a build dependency, so cargo
//! rebuilds the agent when the programs change. The programs are the `memtrace` binary target.
#![no_std]
