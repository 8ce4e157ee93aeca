//! For tests on fetched data: one rule, used by every crate's tests — a test whose data
//! set is absent is skipped with a note on a developer's machine, and **fails** under
//! `CI=true` (CI fetches every data set first, so absence there is a fault, not a skip).

use std::path::PathBuf;

/// The data directory tests use: `$FEDPACE_DATA_DIR`, else the workspace's `data/`
/// (where `fedpace datasets fetch` puts them when run from the repository root).
pub fn data_dir() -> PathBuf {
    std::env::var_os("FEDPACE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

/// Whether `CI` is set to `true` (or `1`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that `what` could not be tested for lack of data: panics under `CI=true`,
/// else prints a note.
pub fn absent(what: &str) {
    let msg = format!(
        "{what}: data not in {} (run `fedpace datasets fetch all`)",
        data_dir().display()
    );
    assert!(
        !under_ci(),
        "{msg}; CI=true, so this is a failure, not a skip"
    );
    eprintln!("note: skipping {msg}");
}

/// The data directory if data set `name` is present and verified; `None` (after
/// [`absent`]) if it is not there. A present but corrupt data set always panics.
pub fn require(name: &str) -> Option<PathBuf> {
    let dir = data_dir();
    let info = crate::catalog(&dir).into_iter().find(|d| d.name == name);
    match info {
        Some(d) if d.present => {
            if let Some(p) = d.problem {
                panic!("{name}: {p}");
            }
            Some(dir)
        }
        _ => {
            absent(name);
            None
        }
    }
}
