//! Symbolization on real programs: inline frames, C++ and Rust names, file and line.
mod common;

use common::*;
use serde_json::Value;

/// (function, inlined, line) of each frame.
fn frames(stack: &Value) -> Vec<(String, bool, Option<u64>)> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            (
                frame["function"].as_str().unwrap_or("??").to_owned(),
                frame["inlined"].as_bool().unwrap(),
                frame["line"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn inlined_calls_show_as_their_own_frames() {
    let _serial = serial();
    let binary = build("inlined.c", "cc", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["summary"]["outstanding_bytes"], 777);
    let stack = stack_from(&report, "grab");
    let frames = frames(stack);
    assert_eq!(
        frames[..3],
        [
            ("grab".to_owned(), true, Some(line_of("inlined", "return malloc(size)"))),
            ("build_table".to_owned(), false, Some(line_of("inlined", "sink = grab(777)"))),
            ("main".to_owned(), false, Some(line_of("inlined", "build_table();"))),
        ]
    );
    // The inlined frame and the function it sits in share one address.
    assert_eq!(stack["frames"][0]["address"], stack["frames"][1]["address"]);
    assert_no_probes_left();
}

#[test]
fn cpp_names_are_demangled() {
    let _serial = serial();
    let binary = build("widgets.cpp", "c++", &["-O0", "-g", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stack = stack_from(&report, "inventory::Store<long>::reserve(unsigned long)");
    assert_eq!(stack["bytes"], 800);
    assert_eq!(stack["frames"][0]["line"], line_of("widgets.cpp", "std::malloc(count"));
    assert_eq!(stack["frames"][0]["file"], source_path("widgets.cpp"));
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_no_probes_left();
}

#[test]
fn rust_names_are_demangled() {
    let _serial = serial();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let binary = build("rusty.rs", &rustc, &["-C", "force-frame-pointers=yes", "-C", "opt-level=0", "-g"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    // The allocation passes through the standard library's Vec code before malloc; the stack
    // holds the program's own function, demangled without its hash, at the right line.
    let stacks = report["stacks"].as_array().unwrap();
    let stack = stacks
        .iter()
        .find(|stack| frames(stack).iter().any(|(function, _, _)| function == "rusty::leak_buffer"))
        .unwrap_or_else(|| panic!("no stack through rusty::leak_buffer: {report:#}"));
    assert_eq!(stack["bytes"], 3000);
    let frames = frames(stack);
    let position = frames.iter().position(|(function, _, _)| function == "rusty::leak_buffer").unwrap();
    assert_eq!(frames[position].2, Some(line_of("rusty.rs", "vec![7u8; 3000]")));
    assert_eq!(frames[position + 1].0, "rusty::main");
    assert_no_probes_left();
}

#[test]
fn without_debug_info_the_symbol_table_names_functions() {
    let _serial = serial();
    // No -g: no DWARF, only the ELF symbol table.
    let binary = build("leaky.c", "cc", &["-O0", "-fno-omit-frame-pointer"]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stack = stack_from(&report, "leak_with_malloc");
    assert_eq!(stack["bytes"], 4000);
    assert_eq!(stack["frames"][0]["file"], Value::Null);
    assert_eq!(stack["frames"][0]["line"], Value::Null);
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_no_probes_left();
}
/// Runs a tool of the build (objcopy, strip) and checks it succeeded.
fn tool(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|error| panic!("{program} does not run (cargo xtask setup installs binutils): {error}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// Builds leaky.c as `name` in its own directory with `link_flags`, moves its debug info to
/// `name.debug` beside it, and strips the binary of every symbol and all DWARF.
fn stripped_leaky(dir: &std::path::Path, name: &str, link_flag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let built = build_variant("leaky.c", name, "cc", &["-O0", "-g", "-fno-omit-frame-pointer", link_flag], &[]);
    let binary = dir.join(name);
    std::fs::copy(&built, &binary).unwrap();
    let debug = dir.join(format!("{name}.debug"));
    tool("objcopy", &["--only-keep-debug".as_ref(), binary.as_os_str(), debug.as_os_str()]);
    tool("strip", &["--strip-all".as_ref(), binary.as_os_str()]);
    (binary, debug)
}

/// Asserts leaky's three leaking stacks are named, with file and line, as with full debug info.
fn assert_leaky_named(report: &Value) {
    for (function, bytes, call) in [
        ("leak_with_realloc", 5000, "realloc(block, 5000)"),
        ("leak_with_malloc", 4000, "malloc(1000)"),
        ("leak_with_calloc", 300, "calloc(10, 30)"),
    ] {
        let stack = stack_from(report, function);
        assert_eq!(stack["bytes"], bytes);
        assert_eq!(stack["frames"][0]["line"], line_of("leaky", call), "{stack:#}");
        assert_eq!(stack["frames"][0]["file"], source_path("leaky.c"), "{stack:#}");
        assert_eq!(stack["frames"][1]["function"], "main", "{stack:#}");
    }
}

#[test]
fn stripped_binary_is_named_from_a_debug_file_found_by_build_id() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (binary, debug) = stripped_leaky(dir.path(), "leaky_by_id", "-Wl,--build-id=sha1");
    let data = std::fs::read(&binary).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let build_id: String =
        object::Object::build_id(&elf).unwrap().expect("a build-id").iter().map(|b| format!("{b:02x}")).collect();
    let debug_dir = dir.path().join("debug");
    let by_id = debug_dir.join(".build-id").join(&build_id[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::rename(&debug, by_id.join(format!("{}.debug", &build_id[2..]))).unwrap();

    // Without the debug directory the frames are bare: the binary has no names left.
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stacks = report["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 3, "{report:#}");
    assert!(stacks.iter().all(|stack| stack["frames"][0]["function"].is_null()), "{report:#}");
    assert!(stacks.iter().all(|stack| stack["frames"][0]["module_offset"].is_string()), "{report:#}");

    let (output, report) =
        memtrace_json(&["run", "--debug-dir", debug_dir.to_str().unwrap()], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_leaky_named(&report);
    assert_no_probes_left();
}

#[test]
fn stripped_binary_is_named_from_a_debug_file_found_by_debuglink() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // No build-id: only the debuglink can lead to the debug file, in the binary's .debug/.
    let (binary, debug) = stripped_leaky(dir.path(), "leaky_by_link", "-Wl,--build-id=none");
    let link = format!("--add-gnu-debuglink={}", debug.display());
    tool("objcopy", &[link.as_ref(), binary.as_os_str()]);
    std::fs::create_dir_all(dir.path().join(".debug")).unwrap();
    std::fs::rename(&debug, dir.path().join(".debug/leaky_by_link.debug")).unwrap();

    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_leaky_named(&report);
    assert_no_probes_left();
}

#[test]
fn a_binary_replaced_on_disk_while_running_is_still_named() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let built = build_c("replaced");
    let binary = dir.path().join("replaced");
    std::fs::copy(&built, &binary).unwrap();
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // The program did replace itself.
    assert_eq!(std::fs::read_to_string(&binary).unwrap(), "not an ELF file any more\n");
    let stack = stack_from(&report, "leak_after_replacing");
    assert_eq!(stack["bytes"], 4321);
    assert_eq!(stack["frames"][0]["line"], line_of("replaced", "malloc(4321)"));
    assert_eq!(stack["frames"][0]["module"], binary.to_str().unwrap());
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_no_probes_left();
}

#[test]
fn jit_code_is_named_from_the_perf_map() {
    let _serial = serial();
    let binary = build_c("jit");
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    let pid = report["target"]["pid"].as_u64().unwrap();
    let perf_map = format!("/tmp/perf-{pid}.map");
    let _ = std::fs::remove_file(&perf_map);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stack = stack_from(&report, "jit_leaker");
    assert_eq!(stack["bytes"], 4444);
    assert_eq!(stack["frames"][0]["module"], perf_map);
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_eq!(stack["frames"][1]["line"], line_of("jit", "sink = jitted()"));
    assert_no_probes_left();
}

#[test]
fn non_pie_executables_are_named() {
    let _serial = serial();
    let binary =
        build_variant("leaky.c", "leaky_no_pie", "cc", &["-O0", "-g", "-fno-omit-frame-pointer", "-no-pie"], &[]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_leaky_named(&report);
    // Loaded at its link address: the address is the file's virtual address, not relocated.
    let frame = &stack_from(&report, "leak_with_malloc")["frames"][0];
    let address = u64::from_str_radix(frame["address"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert!((0x400000..0x1000000).contains(&address), "{frame:#}");
    assert_no_probes_left();
}

#[test]
fn frames_in_a_shared_library_are_named() {
    let _serial = serial();
    let flags = ["-O0", "-g", "-fno-omit-frame-pointer"];
    let library = build_variant("libleak.c", "libleak.so", "cc", &[&flags[..], &["-shared", "-fPIC"]].concat(), &[]);
    let directory = library.parent().unwrap().display().to_string();
    let rpath = format!("-Wl,-rpath,{directory}");
    let binary = build_variant("uses_lib.c", "uses_lib", "cc", &flags, &[library.to_str().unwrap(), &rpath]);
    let (output, report) = memtrace_json(&["run"], &[binary.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stack = stack_from(&report, "leak_in_library");
    assert_eq!(stack["bytes"], 2468);
    assert_eq!(stack["frames"][0]["module"], library.to_str().unwrap());
    assert_eq!(stack["frames"][0]["line"], line_of("libleak", "malloc(2468)"));
    assert_eq!(stack["frames"][0]["file"], source_path("libleak.c"));
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_eq!(stack["frames"][1]["module"], binary.to_str().unwrap());
    assert_no_probes_left();
}
