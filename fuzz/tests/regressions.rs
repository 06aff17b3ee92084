//! Replays every file of `fuzz/regressions/<target>/` and `fuzz/corpus/<target>/` through the
//! same property the fuzz target checks (`cargo test` in `fuzz/`; no libFuzzer, no nightly).
//! A file that once crashed a target stays here, so the bug cannot come back unnoticed.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for kind in ["regressions", "corpus"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read input");
            eprintln!("replaying {}", file.display());
            check(&data);
            n += 1;
        }
    }
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn cursor_inputs() {
    replay("cursor", todo_fuzz::check_cursor);
}

#[test]
fn http_request_inputs() {
    replay("http_request", todo_fuzz::check_http);
}

#[test]
fn query_inputs() {
    replay("query", todo_fuzz::check_query);
}

#[test]
fn body_inputs() {
    replay("body", todo_fuzz::check_body);
}
