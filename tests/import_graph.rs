//! The crate's import graph has no circle (tools/import_graph.py), and the checker
//! itself finds the circles of its synthetic trees (so a pass means something).

use std::process::Command;

fn run_checker(arg: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg("tools/import_graph.py")
        .arg(arg)
        .current_dir(root)
        .output()
        .expect("run python3 tools/import_graph.py (is python3 installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "import_graph.py {arg} failed:\n{text}"
    );
}

#[test]
fn checker_finds_known_circles() {
    run_checker("--self-test");
}

#[test]
fn src_has_no_import_circle() {
    run_checker("--check");
}
