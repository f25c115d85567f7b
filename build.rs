//! Embeds every recorded stream under `fixtures/<dir>/*.sse` into the binary, so that the
//! replay upstream (`streamgate demo`, the gateway tests) works from any directory and a new
//! recording, or a new dialect's folder, is served without a code change.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut code = String::from(
        "/// (directory, model name = file stem, SSE body) of every embedded fixture.\n\
         pub static FIXTURES: &[(&str, &str, &[u8])] = &[\n",
    );
    println!("cargo:rerun-if-changed={}", root.display());
    let mut dirs: Vec<String> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    for dir in &dirs {
        let path = root.join(dir);
        println!("cargo:rerun-if-changed={}", path.display());
        let mut files: Vec<_> = match std::fs::read_dir(&path) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sse"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        for file in files {
            println!("cargo:rerun-if-changed={}", file.display());
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let _ = writeln!(
                code,
                "    ({dir:?}, {stem:?}, include_bytes!({:?})),",
                file.display().to_string()
            );
        }
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").map(std::path::PathBuf::from);
    if let Ok(out) = out
        && let Err(e) = std::fs::write(out.join("fixtures.rs"), code)
    {
        println!("cargo:warning=writing fixtures.rs: {e}");
    }
}
