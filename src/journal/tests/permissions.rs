//! The journal holds prompts and answers: only the gateway's user may read it.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn directories_are_0700_and_segments_0600_through_rotation_and_reopening() {
    let root = tempfile::tempdir().unwrap();
    // Missing parents are created too, each as private as the journal itself.
    let dir = root.path().join("state").join("journal");
    let (j, _) = Journal::open(config(&dir, FsyncPolicy::Never, 2048)).unwrap();
    for k in 0..6 {
        let name = format!("s{k}");
        append_open(&j, &name);
        append_big(&j, &name, 0);
        append_end(&j, &name);
    }
    drop(j);
    // Reopening appends to (or replaces) segments: none may come back wider.
    let (j, _) = Journal::open(config(&dir, FsyncPolicy::Never, 2048)).unwrap();
    append_open(&j, "after");
    append_big(&j, "after", 0);
    drop(j);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("state")), 0o700);
    let numbers = segments(&dir);
    assert!(numbers.len() > 1, "the test needs rotation: {numbers:?}");
    for n in numbers {
        assert_eq!(mode(&seg(&dir, n)), 0o600, "segment {n}");
    }
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", path.display());
    }
}
