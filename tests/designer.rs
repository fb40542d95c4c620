//! The designer plug-in (plugin/): its node tests (typecheck, SSE parser, box edits, PNG
//! metadata, the Figma sandbox against a fake `figma`) and the Playwright browser tests, which
//! drive Debian's Chromium against this build's `letterpress serve`. Screenshots are kept in
//! target/designer-e2e/. Needs `scripts/setup` (npm packages, Chromium, the built page).

use std::path::Path;
use std::process::Command;

fn npm(plugin: &Path, script: &str) {
    let status = Command::new("npm")
        .args(["run", "--silent", script])
        .current_dir(plugin)
        .env("LETTERPRESS_BIN", env!("CARGO_BIN_EXE_letterpress"))
        .env(
            "LETTERPRESS_SCREENSHOTS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/designer-e2e"),
        )
        .status()
        .unwrap_or_else(|e| panic!("running npm (Node.js 20 and npm are needed): {e}"));
    assert!(
        status.success(),
        "`npm run {script}` in plugin/ failed; its output is above"
    );
}

/// One test, so the two npm runs never build plugin/build/ at the same time.
#[test]
fn designer_node_and_browser_tests() {
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin");
    assert!(
        plugin.join("node_modules/playwright-core").is_dir(),
        "plugin/node_modules is missing: run scripts/setup"
    );
    npm(&plugin, "test");
    npm(&plugin, "e2e");
}
