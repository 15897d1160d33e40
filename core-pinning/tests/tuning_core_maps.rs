//! Keeps the example core maps in `tuning/core-maps/` honest: every file
//! there must parse and validate against a 16-core machine, so the examples
//! shipped to operators can never rot.

use std::path::PathBuf;

use core_pinning::{CoreMap, Topology};

fn core_map_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tuning/core-maps")
}

#[test]
fn every_example_core_map_parses_and_validates_on_16_cores() {
    let dir = core_map_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the 2-, 4- and 16-core examples in {}, found {files:?}",
        dir.display()
    );

    let topo = Topology::fake(16);
    for path in &files {
        let map = CoreMap::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let checked = map
            .validate(&topo)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            checked.warnings.is_empty(),
            "{}: example maps should be warning-free: {:?}",
            path.display(),
            checked.warnings
        );
        assert_ne!(
            checked.housekeeping,
            Vec::<usize>::new(),
            "{}: leave at least one core for IRQs and the OS",
            path.display()
        );
    }
}

#[test]
fn the_example_named_for_n_cores_fits_on_n_cores() {
    for (file, cores) in [
        ("2-cores.toml", 2),
        ("4-cores.toml", 4),
        ("16-cores.toml", 16),
    ] {
        let path = core_map_dir().join(file);
        let map = CoreMap::from_path(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        map.validate(&Topology::fake(cores))
            .unwrap_or_else(|e| panic!("{file} on a {cores}-core host: {e}"));
    }
}
