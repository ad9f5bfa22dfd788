//! The reusable GitHub Action (`action.yml`): its leak-check step, taken out of the file as
//! GitHub would run it (bash, the inputs in the environment), on a two-binary suite.
mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::*;

/// The `run` script of the step named `name` in action.yml, read with PyYAML.
fn action_step(name: &str) -> String {
    let action = Path::new(env!("CARGO_MANIFEST_DIR")).join("../action.yml");
    let program = "import sys, yaml\n\
                   action = yaml.safe_load(open(sys.argv[1]))\n\
                   print(next(step['run'] for step in action['runs']['steps'] if step['name'] == sys.argv[2]))";
    let output = Command::new("/usr/bin/python3").args(["-c", program]).arg(&action).arg(name).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_actions_leak_check_fails_on_a_leaking_suite_and_writes_junit() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let clean = build_c("clean");
    let dir = tempfile::tempdir().unwrap();
    // memtrace on PATH as the installed package puts it, and a sudo that is already root.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(memtrace_bin(), bin.join("memtrace")).unwrap();
    std::fs::write(bin.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    std::fs::set_permissions(bin.join("sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let junit = dir.path().join("memtrace-junit.xml");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let output = Command::new("bash")
        .arg("-c")
        .arg(action_step("Leak check"))
        .env("PATH", path)
        .env("COMMAND", format!("{} && {}", clean.display(), leaky.display()))
        .env("SUPPRESSIONS", "")
        .env("JUNIT", &junit)
        .env("ARGUMENTS", "--trace-only '*/programs/*'")
        .output()
        .unwrap();
    // Both tests passed, but the suite leaked: --check's exit code.
    assert_eq!(output.status.code(), Some(23), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "clean: done\nleaky: done\n");
    assert_eq!(junit_schema_error(&junit), None);
    let read = junitparser_read(&junit);
    let suites = read["suites"].as_array().unwrap();
    // The two test binaries, not bash (--trace-only).
    let names: Vec<&str> = suites.iter().map(|suite| suite["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|name| name.ends_with("/clean")), "{names:?}");
    assert!(names.iter().any(|name| name.ends_with("/leaky")), "{names:?}");
    let failing: Vec<&str> = suites
        .iter()
        .flat_map(|suite| suite["cases"].as_array().unwrap())
        .filter(|case| case["results"].as_array().unwrap().iter().any(|result| result["kind"] == "failure"))
        .map(|case| case["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing.len(), 3, "{failing:?}");
    assert!(failing.iter().any(|name| name.starts_with("definitely lost in leak_with_realloc")), "{failing:?}");
}
