//! The documentation stays navigable: every relative link in every Markdown file resolves
//! (`tools/check_links.py`), the checker itself still catches a broken link (its
//! `--self-test`), and the README stays a five-minute read (at most 250 lines; reference
//! material belongs in `docs/`, measurements in `bench/results/`).

use std::path::Path;
use std::process::Command;

/// The README's hard limit, from issue 12.
const README_MAX_LINES: usize = 250;

/// Runs the link checker with `args` from the repository root; panics with its output
/// unless it exits 0.
fn run_checker(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tools/check_links.py"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("python3 must be installed to run tools/check_links.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "tools/check_links.py {args:?} failed ({}):\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn the_link_checker_reports_a_broken_link_in_its_self_test() {
    run_checker(&["--self-test"]);
}

#[test]
fn every_relative_link_in_the_repository_resolves() {
    run_checker(&[]);
}

#[test]
fn the_readme_is_at_most_250_lines() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).expect("README.md is readable");
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move reference \
         material to docs/ and measurements to bench/results/"
    );
}
