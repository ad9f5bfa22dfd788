//! One object file (executable or library) opened for symbolization: its loadable segments, to
//! turn file offsets into ELF addresses, and addr2line's loader for DWARF and symbol tables.
use std::{borrow::Cow, fs::File, os::fd::AsRawFd, path::PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, SymbolKind};

use super::debuginfo::{self, DebugLinks};

/// A source-level frame at one address; several for inlined calls, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

pub struct Module {
    loader: addr2line::Loader,
    /// (file offset, file size, virtual address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// Function symbols as (start, end, name), sorted by start; from the symbol table and the
    /// dynamic one. Sizes matter: an address past a symbol's end is not in it (a static
    /// function absent from `.dynsym` must not take its neighbour's name).
    symbols: Vec<(u64, u64, String)>,
    /// Its GNU build ID, when it has one.
    build_id: Option<Vec<u8>>,
}

impl Module {
    /// Opens a module through a file handle taken while the target was alive, so that a
    /// deleted file or an exited process still symbolizes. `module_path` is where the process
    /// mapped it from: a stripped module's separate debug file is looked for from there (by
    /// build-id first, under `debug_dirs`).
    pub fn open(file: &File, module_path: &str, debug_dirs: &[PathBuf]) -> Result<Self, String> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let reader = File::open(&path).map_err(|error| error.to_string())?;
        let cache = ReadCache::new(reader);
        let elf = object::File::parse(&cache).map_err(|error| error.to_string())?;
        let segments = elf
            .segments()
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset, size, segment.address())
            })
            .collect();
        let mut symbols = function_symbols(&elf);
        let has_dwarf = elf.section_by_name(".debug_info").is_some_and(|section| section.size() > 0);
        let links = DebugLinks::read(&elf);
        let debug_file = if has_dwarf { None } else { debuginfo::find(&links, module_path, debug_dirs) };
        if let Some(debug_file) = &debug_file {
            log::debug!("debug info of {module_path} from {}", debug_file.path.display());
            // Its symbol table has the static functions the stripped module lost.
            symbols.extend(symbols_of_file(&debug_file.file));
        }
        let dwarf_path = debug_file.as_ref().map_or(path, debuginfo::DebugFile::fd_path);
        let loader = addr2line::Loader::new(&dwarf_path).map_err(|error| error.to_string())?;
        symbols.sort();
        symbols.dedup_by_key(|symbol| symbol.0);
        Ok(Self { loader, segments, symbols, build_id: links.build_id })
    }

    /// Its GNU build ID, when it has one.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// The ELF virtual address of a file offset.
    pub fn address_of(&self, file_offset: u64) -> Option<u64> {
        // The segments come from the file: any sum may overflow.
        self.segments.iter().find_map(|&(offset, size, address)| {
            let into = file_offset.checked_sub(offset).filter(|&into| into < size)?;
            address.checked_add(into)
        })
    }

    /// Source frames at `address` (an ELF virtual address inside the call instruction): DWARF
    /// with inlined frames where there is debug info, else the symbol table's name.
    pub fn frames(&self, address: u64) -> Vec<SourceFrame> {
        let mut frames = Vec::new();
        // addr2line looks up [address, address + 1), which overflows at the last address (no
        // DWARF range can hold it anyway).
        let lookup = if address == u64::MAX { None } else { self.loader.find_frames(address).ok() };
        if let Some(mut iter) = lookup {
            while let Ok(Some(frame)) = iter.next() {
                let function = frame.function.as_ref().and_then(|name| name.demangle().ok()).map(Cow::into_owned);
                let (file, line) = match &frame.location {
                    Some(location) => (location.file.map(str::to_owned), location.line),
                    None => (None, None),
                };
                frames.push(SourceFrame { function, file, line });
            }
        }
        if frames.iter().all(|frame| frame.function.is_none()) {
            let function =
                self.symbol_at(address).map(|name| addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned());
            let (file, line) = frames.last().map_or((None, None), |frame| (frame.file.clone(), frame.line));
            frames = vec![SourceFrame { function, file, line }];
        }
        frames
    }

    /// The function symbol whose range holds `address`.
    fn symbol_at(&self, address: u64) -> Option<&str> {
        let index = self.symbols.partition_point(|symbol| symbol.0 <= address).checked_sub(1)?;
        let (_, end, name) = &self.symbols[index];
        (address < *end).then_some(name.as_str())
    }
}

/// Function symbols as (start, end, name), from the symbol table and the dynamic one.
fn function_symbols<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Vec<(u64, u64, String)> {
    elf.symbols()
        .chain(elf.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() > 0)
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            Some((symbol.address(), symbol.address().saturating_add(symbol.size()), name.to_owned()))
        })
        .collect()
}

fn symbols_of_file(file: &File) -> Vec<(u64, u64, String)> {
    let cache = ReadCache::new(file);
    object::File::parse(&cache).map(|elf| function_symbols(&elf)).unwrap_or_default()
}
