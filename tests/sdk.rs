//! Clients generated from `openapi/openapi.yaml` work: `tests/sdk/python_walkthrough.py` calls every
//! operation of the spec against this build's binary through an openapi-python-client client, and
//! `tests/sdk/typescript_check.py` builds the typescript-fetch client with `tsc --strict` and checks
//! it reads binary answers as blobs.
//!
//! Part of `cargo test` so the README's one test command covers the SDKs. The generators are
//! Python and Java tools (`pip install openapi-python-client openapi-generator-cli jsonschema
//! pyyaml`, Java 17, npm); without them the tests say so and pass, except under `CI=true`, where a
//! missing tool fails them.

use std::process::Command;

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A tool by name, and the command that answers successfully when it is installed.
type Tool<'a> = (&'a str, &'a str, &'a [&'a str]);

/// Whether the tools are there; when not, fails under CI and otherwise explains the skip.
fn tools_present(test: &str, tools: &[Tool]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, program, args)| !have(program, args))
        .map(|(name, _, _)| *name)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: CI=true and these tools are missing: {missing:?} (see .ci/run for their installs)"
    );
    eprintln!(
        "SKIPPED {test}: missing {missing:?}; install them with `python3 -m pip install \
         openapi-python-client openapi-generator-cli jsonschema pyyaml` (Java 17 and npm are \
         needed too), or set CI=true to make this a failure"
    );
    false
}

fn run_script(script: &str, args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tests/sdk/{script}"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Shown with `cargo test -- --nocapture`.
    print!("{script}: {stdout}");
}

#[test]
fn a_generated_python_client_calls_every_operation_of_the_spec() {
    let tools: &[Tool] = &[
        ("openapi-python-client", "openapi-python-client", &["--version"]),
        (
            "jsonschema and pyyaml",
            "python3",
            &["-c", "import jsonschema, yaml"],
        ),
    ];
    if !tools_present("python_walkthrough", tools) {
        return;
    }
    let workdir = tempfile::tempdir().expect("a temporary directory");
    run_script(
        "python_walkthrough.py",
        &[
            "--fitd-bin",
            env!("CARGO_BIN_EXE_fitd"),
            "--workdir",
            workdir.path().to_str().expect("a UTF-8 temporary path"),
        ],
    );
}

#[test]
fn the_generated_typescript_client_compiles_and_reads_binary_answers_as_blobs() {
    let tools: &[Tool] = &[
        ("openapi-generator-cli", "openapi-generator-cli", &["version"]),
        ("npm", "npm", &["--version"]),
        ("pyyaml", "python3", &["-c", "import yaml"]),
    ];
    if !tools_present("typescript_check", tools) {
        return;
    }
    let workdir = tempfile::tempdir().expect("a temporary directory");
    run_script(
        "typescript_check.py",
        &[
            "--workdir",
            workdir.path().to_str().expect("a UTF-8 temporary path"),
        ],
    );
}
