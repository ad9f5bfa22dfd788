//! What can go wrong between memtrace and the kernel side, for callers that tell the cases
//! apart (a missing map, a failed attach, a program the verifier refused).
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("loading memtrace's eBPF programs into the kernel failed: {0}")]
    Load(String),
    #[error("attaching to {function} in {object} failed: {detail}")]
    Attach { function: String, object: String, detail: String },
    #[error("reading the kernel-side map {map} failed: {detail}")]
    Map { map: &'static str, detail: String },
    #[error(transparent)]
    TooLarge(#[from] super::memory::TooLarge),
}

pub(super) fn missing(map: &'static str) -> ProbeError {
    ProbeError::Map { map, detail: "missing from the eBPF object".into() }
}

pub(super) fn map_error(map: &'static str, error: aya::maps::MapError) -> ProbeError {
    ProbeError::Map { map, detail: crate::error_text::with_causes(&error) }
}
