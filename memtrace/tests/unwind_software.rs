//! Stacks through software built the way people build it, without frame pointers, walked by
//! unwind tables (issue 17): a shared library linked in and one opened with dlopen, C++ at -O2
//! through libstdc++, streams libc allocates for the program, a Rust release build, page faults,
//! libstdc++'s emergency pool and its built-in suppression, and a module whose table does not
//! fit. Each names the whole function chain, innermost first, and where valgrind can run, the
//! chain valgrind prints for the same block.
mod common;

use std::path::PathBuf;

use common::{chains::*, *};
use serde_json::Value;

/// -O2 without frame pointers, with line info for valgrind and memtrace alike.
const OPTIMIZED: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

/// Debian's libstdc++6-12-dbg: libstdc++ built with debug info (and without optimization),
/// used in place of the stripped one by putting its directory first on the library path.
const LIBSTDCXX_DEBUG_DIR: &str = "/usr/lib/x86_64-linux-gnu/debug";

/// The memtrace stack matching a valgrind loss record: same kind, bytes and blocks.
fn stack_for<'a>(report: &'a Value, record: &LossRecord) -> &'a Value {
    heap_stacks(report)
        .into_iter()
        .find(|stack| {
            stack["leak_kind"] == record.kind.as_str()
                && stack["bytes"] == record.bytes
                && stack["allocations"] == record.blocks
        })
        .unwrap_or_else(|| panic!("no stack for valgrind's {record:?} in {:#}", report["stacks"]))
}

fn scratch_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("programs")
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn a_library_without_frame_pointers_is_walked_linked_in_and_opened() {
    let _serial = serial();
    let library = |name: &str, size: &str| {
        let define = format!("-DLEAK_SIZE={size}");
        let flags = [OPTIMIZED, &["-shared", "-fPIC", &define]].concat();
        build_variant("unwind_shlib.c", name, "cc", &flags, &[])
    };
    let needed = library("libunwind_needed.so", "1111");
    let opened = library("libunwind_opened.so", "2222");
    let dir = scratch_dir();
    let program = build_variant(
        "unwind_shlib_user.c",
        "unwind_shlib_user",
        "cc",
        OPTIMIZED,
        &[&format!("-L{}", dir.display()), "-lunwind_needed", &format!("-Wl,-rpath,{}", dir.display())],
    );
    let command = [path(&program), path(&opened)];
    let (_, report) = memtrace_json_ok_env(&["run"], &command, &[]);
    let valgrind = valgrind_records(&command, &[]);
    let inside = ["leak_deep", "leak_middle", "leak_outer", "shlib_entry"];
    for (bytes, library, caller) in [(1111, &needed, "use_needed"), (2222, &opened, "use_opened")] {
        let stack = heap_stack_of(&report, bytes);
        let walked = names(stack);
        let expected = strings(&[&inside[..], &[caller, "main"]].concat());
        assert_eq!(up_to_main(&walked), expected, "{stack:#}");
        // Below main, libc's start frames to the outermost: the walk is complete.
        assert_eq!(
            walked[expected.len()..],
            ["__libc_start_call_main", "__libc_start_main_impl", "_start"],
            "{stack:#}"
        );
        assert_eq!(stack["truncated"], false);
        for frame in &frames(stack)[..inside.len()] {
            assert_eq!(frame["module"], path(library), "{stack:#}");
        }
        let record = valgrind[0].1.iter().find(|record| record.bytes == bytes).expect("valgrind lists the block");
        assert_eq!(record.kind, "definitely_lost");
        assert_eq!(record.chain, expected, "valgrind's chain");
    }
    assert_no_probes_left();
}

/// The C++ program's leaks as valgrind lists them, checked against memtrace's stacks: each
/// physical frame's function, up to main, the same.
fn cxx_leaks_match_valgrind(env: &[(&str, &str)]) -> (Value, Vec<LossRecord>) {
    let binary = build_variant("unwind_cxx.cpp", "unwind_cxx", "c++", OPTIMIZED, &[]);
    let command = [path(&binary)];
    let (_, report) = memtrace_json_ok_env(&["run"], &command, env);
    let valgrind = valgrind_records(&command, env).remove(0).1;
    let leaks: Vec<&LossRecord> = valgrind.iter().filter(|record| record.kind != "still_reachable").collect();
    assert_eq!(leaks.len(), 6, "{valgrind:#?}");
    for record in leaks {
        let stack = stack_for(&report, record);
        assert_eq!(up_to_main(&physical_names(stack)), record.physical, "{record:#?}\n{stack:#}");
        assert_eq!(stack["truncated"], false);
    }
    (report, valgrind)
}

#[test]
fn cxx_containers_leak_through_libstdcxx_to_the_programs_functions() {
    let _serial = serial();
    // With libstdc++6-12-dbg's library, libstdc++'s own frames are named.
    let (report, _) = cxx_leaks_match_valgrind(&[("LD_LIBRARY_PATH", LIBSTDCXX_DEBUG_DIR)]);
    let chain_of = |bytes: u64| up_to_main(&physical_names(heap_stack_of(&report, bytes)));
    // The long string's characters: allocated by std::string's _M_create in libstdc++, called
    // from the constructor inlined into make_long_string.
    let characters = chain_of(60);
    let libstdcxx = strings(&[
        "std::__new_allocator<char>::allocate(unsigned long, void const*)",
        "std::allocator_traits<std::allocator<char> >::allocate(std::allocator<char>&, unsigned long)",
        "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create(unsigned long&, unsigned long)",
    ]);
    assert_eq!(
        characters,
        [libstdcxx, strings(&["make_long_string[abi:cxx11](char const*)", "leak_string()", "main"])].concat()
    );
    let stack = heap_stack_of(&report, 60);
    for frame in &frames(stack)[..3] {
        assert!(frame["module"].as_str().unwrap_or("").starts_with(LIBSTDCXX_DEBUG_DIR), "{stack:#}");
    }
    // The string object itself, the vector and its grown array, make_shared's block and the
    // shared_ptr holding it: from the program's functions (the templates are instantiated in
    // it), down to main.
    assert_eq!(chain_of(32), ["make_long_string[abi:cxx11](char const*)", "leak_string()", "main"]);
    assert_eq!(chain_of(24), ["grow_vector(int)", "leak_vector()", "main"]);
    assert_eq!(
        chain_of(4096),
        [
            "void std::vector<long, std::allocator<long> >::_M_realloc_insert<long>(__gnu_cxx::__normal_iterator<long*, std::vector<long, std::allocator<long> > >, long&&)",
            "grow_vector(int)",
            "leak_vector()",
            "main"
        ]
    );
    assert_eq!(chain_of(312), ["leak_shared()", "main"]);
    assert_eq!(chain_of(16), ["leak_shared()", "main"]);
    assert_no_probes_left();
}

#[test]
fn cxx_containers_through_the_stripped_libstdcxx_match_valgrind() {
    let _serial = serial();
    // Debian's own libstdc++, stripped and optimized: what valgrind names, memtrace names.
    cxx_leaks_match_valgrind(&[]);
    assert_no_probes_left();
}

#[test]
fn an_unclosed_stream_names_the_programs_callers_below_libc() {
    let _serial = serial();
    let binary = build_variant("unwind_fopen.c", "unwind_fopen", "cc", OPTIMIZED, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let command = [path(&binary), path(&log)];
    let (_, report) = memtrace_json_ok_env(&["run"], &command, &[]);
    let valgrind = valgrind_records(&command, &[]).remove(0).1;
    assert_eq!(valgrind.len(), 2, "{valgrind:#?}");
    for record in &valgrind {
        assert_eq!(record.kind, "still_reachable");
        let stack = stack_for(&report, record);
        let walked = up_to_main(&names(stack));
        assert_eq!(canonical_names(&walked), canonical_names(&record.chain), "{record:#?}\n{stack:#}");
        assert_eq!(stack["truncated"], false);
    }
    // fopen's FILE (fopen jumps to __fopen_internal, leaving no frame of its own), and the
    // buffer of its first write.
    let file = valgrind.iter().find(|record| record.chain.iter().any(|name| name == "open_log")).expect("fopen's FILE");
    assert_eq!(public_names(&up_to_main(&names(stack_for(&report, file)))), ["fopen_internal", "open_log", "main"]);
    let buffer =
        valgrind.iter().find(|record| record.chain.iter().any(|name| name == "write_log")).expect("the buffer");
    let buffer_chain = public_names(&up_to_main(&names(stack_for(&report, buffer))));
    assert_eq!(buffer_chain.first().map(String::as_str), Some("IO_file_doallocate"), "{buffer_chain:?}");
    assert_eq!(buffer_chain[buffer_chain.len() - 3..], ["fprintf", "write_log", "main"], "{buffer_chain:?}");
    assert_no_probes_left();
}

#[test]
fn a_rust_release_build_names_its_chain_demangled() {
    let _serial = serial();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // Release mode as cargo builds it (no frame pointers), with debug info for line numbers.
    let binary = build_variant("unwind_rust.rs", "unwind_rust", &rustc, &["-C", "opt-level=3", "-g"], &[]);
    let command = [path(&binary)];
    let (_, report) = memtrace_json_ok_env(&["run"], &command, &[]);
    let valgrind = valgrind_records(&command, &[]).remove(0).1;
    let lost: Vec<&LossRecord> = valgrind.iter().filter(|record| record.kind == "definitely_lost").collect();
    assert_eq!(lost.len(), 3, "{valgrind:#?}");
    for record in lost {
        let stack = stack_for(&report, record);
        assert_eq!(up_to_main(&physical_names(stack)), record.physical, "{record:#?}\n{stack:#}");
        assert_eq!(stack["truncated"], false);
    }
    let chain_of = |bytes: u64| up_to_main(&physical_names(heap_stack_of(&report, bytes)));
    let start = ["std::rt::lang_start::{{closure}}", "std::rt::lang_start_internal", "main"];
    let through_main = |program: &[&str]| {
        let mut chain = strings(program);
        chain.extend(strings(&["unwind_rust::main", "std::sys::backtrace::__rust_begin_short_backtrace"]));
        chain.extend(strings(&start));
        chain
    };
    assert_eq!(chain_of(2400), through_main(&["unwind_rust::leak_boxed_table"]));
    assert_eq!(chain_of(2700), through_main(&["unwind_rust::forget_text"]));
    assert_eq!(
        chain_of(4096),
        through_main(&[
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "unwind_rust::grow_list",
            "unwind_rust::leak_grown_list"
        ])
    );
    assert_no_probes_left();
}

/// The executable mappings of /proc/PID/maps text: (start, end, path).
fn executable_mappings(maps: &str) -> Vec<(u64, u64, String)> {
    maps.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(1)?.contains('x') {
                return None;
            }
            let (start, end) = fields[0].split_once('-')?;
            let path = fields.get(5).map_or(String::new(), |path| (*path).to_owned());
            Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?, path))
        })
        .collect()
}

#[test]
fn faults_in_code_without_frame_pointers_name_the_faulting_chain() {
    let _serial = serial();
    let binary = build_variant("unwind_faults.c", "unwind_faults", "cc", OPTIMIZED, &[]);
    let (output, report) = memtrace_json_ok_env(&["run", "--faults"], &[path(&binary)], &[]);
    let touching: Vec<&Value> = report["faults"]["stacks"]
        .as_array()
        .expect("fault stacks")
        .iter()
        .filter(|stack| stack["frames"][0]["function"] == "touch_fresh_pages")
        .collect();
    assert!(!touching.is_empty(), "{:#}", report["faults"]);
    for stack in &touching {
        assert_eq!(
            up_to_main(&names(stack)),
            ["touch_fresh_pages", "fault_middle", "fault_outer", "main"],
            "{stack:#}"
        );
        assert_eq!(stack["truncated"], false);
    }
    let minor: u64 = touching.iter().map(|stack| stack["minor"].as_u64().unwrap()).sum();
    assert!(minor >= 512, "{minor} faults in touch_fresh_pages");

    // Every frame of every stack in the report lies in an executable mapping of the process,
    // the module that mapping names: the process printed its maps at its end.
    let mappings = executable_mappings(&String::from_utf8_lossy(&output.stdout));
    assert!(mappings.iter().any(|(_, _, file)| file == path(&binary)), "{mappings:?}");
    let mut checked = 0;
    for list in ["stacks", "released_stacks"] {
        for stack in report[list].as_array().into_iter().flatten() {
            checked += check_frames_mapped(stack, &mappings);
        }
    }
    for stack in report["faults"]["stacks"].as_array().expect("fault stacks") {
        checked += check_frames_mapped(stack, &mappings);
    }
    assert!(checked > 10, "only {checked} frames");
    assert_no_probes_left();
}

/// Each frame's address lies in one of `mappings`, and its module is that mapping's file;
/// returns how many frames were checked.
fn check_frames_mapped(stack: &Value, mappings: &[(u64, u64, String)]) -> usize {
    let list = frames(stack);
    for frame in list {
        let address = u64::from_str_radix(frame["address"].as_str().expect("an address").trim_start_matches("0x"), 16)
            .expect("a hex address");
        let mapping = mappings.iter().find(|(start, end, _)| (*start..*end).contains(&address));
        let Some((_, _, file)) = mapping else {
            panic!("frame {frame} is in no executable mapping:\n{stack:#}\n{mappings:?}")
        };
        assert_eq!(frame["module"].as_str(), Some(file.as_str()), "{stack:#}");
    }
    list.len()
}

#[test]
fn libstdcxx_emergency_pool_is_named_and_suppressed_by_the_builtin() {
    let _serial = serial();
    let binary = build_variant("unwind_cxx.cpp", "unwind_cxx", "c++", OPTIMIZED, &[]);
    let env = [("LD_LIBRARY_PATH", LIBSTDCXX_DEBUG_DIR)];
    let (_, report) = memtrace_json_ok_env(&["run"], &[path(&binary)], &env);
    let valgrind = valgrind_records(&[path(&binary)], &env).remove(0).1;
    let pool = valgrind.iter().find(|record| record.kind == "still_reachable").expect("the pool, still reachable");
    // libstdc++ 12's pool: 64 KiB of exceptions and the room for their headers, 72,704 bytes.
    assert_eq!((pool.bytes, pool.blocks), (72_704, 1), "{pool:#?}");
    let stack = stack_for(&report, pool);
    let walked = names(stack);
    // GCC 12 inlines the pool's constructor into eh_alloc.cc's static initializer, run by the
    // loader's _dl_init before main; valgrind stops at the loader's unnamed _dl_start_user.
    let expected = [
        "pool",
        "__static_initialization_and_destruction_0",
        "_GLOBAL__sub_I_eh_alloc.cc",
        "call_init",
        "call_init",
        "_dl_init",
        "??",
    ];
    assert_eq!(walked[..expected.len()], expected, "{stack:#}");
    assert_eq!(public_names(&walked[..pool.chain.len()]), public_names(&pool.chain), "{pool:#?}\n{stack:#}");
    // The walk ends there: the loader's entry code (_start's _dl_start_user, unnamed) is the
    // outermost frame.
    assert_eq!(walked.len(), expected.len(), "{stack:#}");
    assert_eq!(frames(stack)[expected.len() - 1]["module"], "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    assert_eq!(stack["truncated"], false);
    assert_eq!(stack["suppressed_by"], "leak:_GLOBAL__sub_I_eh_alloc.cc (built-in)", "{stack:#}");
    assert_no_probes_left();
}

#[test]
fn a_module_whose_table_does_not_fit_is_walked_by_frame_pointer_and_counted() {
    let _serial = serial();
    // The program's table is a few rows; libc's a third of a MiB: with 64 KiB, the program's
    // and the loader's fit, and libc's does not.
    let binary = build_variant("unwind_chain.c", "unwind_chain", "cc", OPTIMIZED, &[]);
    let (output, report) = memtrace_json_ok_env(&["run", "--unwind-memory", "65536"], &[path(&binary)], &[]);
    let unwind = &report["unwind"];
    assert_eq!(unwind["modules_not_fitting"], 1, "{unwind:#}");
    let libc = unwind["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .find(|module| module["path"].as_str().is_some_and(|path| path.ends_with("/libc.so.6")))
        .expect("libc among the modules");
    assert_eq!(libc["method"], "frame pointer", "{unwind:#}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 modules' unwind tables did not fit in --unwind-memory (65536 bytes)"), "{stderr}");
    // The program's frames, by its table, exactly; libc's start frames below main by frame
    // pointer, which libc does not keep: the walk goes no further than its first libc frame.
    let stack = heap_stack_of(&report, 4242);
    let walked = names(stack);
    assert_eq!(
        up_to_main(&walked),
        ["leaf_alloc", "level5", "level4", "level3", "level2", "level1", "main"],
        "{stack:#}"
    );
    assert_no_probes_left();
}
