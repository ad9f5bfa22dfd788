//! Reading events off the kernel's ring buffer, asynchronously, and decoding them.
use std::{io, os::fd::AsRawFd};

use aya::maps::{MapData, RingBuf};
use memtrace_common::Event;
use tokio::io::unix::AsyncFd;

/// Decodes one ring-buffer record; `None` when it is not an [`Event`] (never expected).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: the length was checked; `Event` is plain data valid for any bit pattern, and the
    // record may not be aligned for it, hence the unaligned read.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Registers an fd-owning value with tokio for readability.
pub fn watch_readable<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: every `T` memtrace passes here (a ring buffer map, the aya-log reader, a pidfd)
    // owns its fd and keeps it open and unchanged until it is dropped along with the AsyncFd.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }.map_err(|error| error.into())
}

/// The agent's end of the `EVENTS` ring buffer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    malformed: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        Ok(Self { ring: watch_readable(ring)?, malformed: 0 })
    }

    /// Waits until the kernel has published new events.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every event available now to `sink`, with the bytes that follow it in its record
    /// (its stack's frames, for events that carry one); returns how many there were.
    pub fn drain(&mut self, mut sink: impl FnMut(&Event, &[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut count = 0;
        while let Some(record) = ring.next() {
            match decode(&record) {
                Some(event) => {
                    sink(&event, &record[size_of::<Event>()..]);
                    count += 1;
                }
                None => self.malformed += 1,
            }
        }
        count
    }

    /// Records that could not be decoded (a kernel/agent version mismatch).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unaligned_records_and_rejects_short_ones() {
        let event = Event {
            kind: 1,
            tgid: 42,
            stack_id: 3,
            flags: 0,
            size: 24,
            addr: 0x1000,
            old_addr: 0,
            old_size: 0,
            timestamp_ns: 9,
        };
        // SAFETY: viewing a plain-data struct as bytes.
        let bytes = unsafe { std::slice::from_raw_parts((&event as *const Event).cast::<u8>(), size_of::<Event>()) };
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(bytes);
        assert_eq!(decode(&shifted[1..]), Some(event));
        assert_eq!(decode(&bytes[..10]), None);
    }
}
