//! Text for the memory picture: one compact table per process.
use std::io::{self, Write};

use super::units::thousands;
use crate::report::{MemoryPicture, printable::printable};

/// Kibibytes, as `pmap -x` shows sizes.
fn kib(bytes: u64) -> String {
    thousands(bytes / 1024)
}

pub fn render_text(pictures: &[MemoryPicture], out: &mut dyn Write) -> io::Result<()> {
    for picture in pictures {
        writeln!(out)?;
        writeln!(
            out,
            "Memory of pid {} (KiB): VSZ {}, RSS {}, PSS {}, USS {}, shared {}, swap {}",
            picture.pid,
            kib(picture.vsz_bytes),
            kib(picture.rss_bytes),
            kib(picture.pss_bytes),
            kib(picture.uss_bytes),
            kib(picture.shared_bytes),
            kib(picture.swap_bytes)
        )?;
        writeln!(out, "    {:<17} {:>5} {:>10} {:>10} {:>10} {:>10}", "kind", "maps", "size", "rss", "pss", "dirty")?;
        for usage in &picture.by_kind {
            writeln!(
                out,
                "    {:<17} {:>5} {:>10} {:>10} {:>10} {:>10}",
                usage.kind.name(),
                usage.mappings,
                kib(usage.size_bytes),
                kib(usage.rss_bytes),
                kib(usage.pss_bytes),
                kib(usage.dirty_bytes)
            )?;
        }
        writeln!(out, "    largest mappings by RSS:")?;
        for mapping in picture.largest.iter().take(5) {
            writeln!(
                out,
                "    {:>18} {:>10} {:>10} {} {} {}",
                printable(&mapping.address),
                kib(mapping.size_bytes),
                kib(mapping.rss_bytes),
                printable(&mapping.mode),
                mapping.kind.name(),
                printable(mapping.path.as_deref().unwrap_or("[anon]"))
            )?;
        }
        if let Some(cgroup) = &picture.cgroup {
            let figure = |value: Option<u64>| value.map_or_else(|| "n/a".to_owned(), kib);
            writeln!(
                out,
                "    cgroup v{} {}: current {}, peak {}; anon {}, file {}, shmem {}, kernel {}",
                cgroup.version,
                printable(&cgroup.path),
                figure(cgroup.current_bytes),
                figure(cgroup.peak_bytes),
                figure(cgroup.anon_bytes),
                figure(cgroup.file_bytes),
                figure(cgroup.shmem_bytes),
                figure(cgroup.kernel_bytes)
            )?;
        }
        writeln!(
            out,
            "    malloc outstanding {} against heap + anonymous RSS {}",
            kib(picture.allocator.outstanding_bytes),
            kib(picture.allocator.heap_and_anonymous_rss_bytes)
        )?;
    }
    Ok(())
}
