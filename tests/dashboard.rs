//! The dashboard end to end: `e2e/run.sh` drives it in headless Chromium against this build's binary.
//!
//! Part of `cargo test` so the README's one test command covers the browser too. `e2e/run.sh`
//! installs Debian's Chromium when it is missing (that needs root) and playwright-core from npm.

use std::process::Command;

#[test]
fn the_dashboard_trains_watches_cancels_and_predicts_in_headless_chromium() {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("bash")
        .arg("e2e/run.sh")
        .current_dir(root)
        .env("FITD_BIN", env!("CARGO_BIN_EXE_fitd"))
        .status()
        .expect("bash runs e2e/run.sh");
    assert!(
        status.success(),
        "the dashboard end-to-end test failed ({status}); its output is above, screenshots and the \
         server log are in {root}/ci-artifacts/screenshots"
    );
}
