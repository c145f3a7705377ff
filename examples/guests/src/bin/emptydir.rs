//! Writes `content` (default `hello from emptydir`) to `DIR/FILE` (default `data.txt`), reads
//! it back and prints `read DIR/FILE: content`. Usage: `emptydir DIR [FILE] [CONTENT]
//! [--write-only] [--expect-fail] [--sleep SECS]`.
//! - `--write-only`: write, print `wrote DIR/FILE`, skip the read.
//! - `--expect-fail`: the write must fail: prints `write DIR/FILE: <error>` and exits 0 (exits
//!   1 with `write DIR/FILE: unexpectedly succeeded` otherwise).
//! - `--sleep SECS`: stay alive that long afterwards (for tests that inspect the volume).
//!
//! A write failure without `--expect-fail` prints `write DIR/FILE: <error>` and exits 1.
use std::time::Duration;

fn main() {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut sleep = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sleep" => sleep = args.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            f if f.starts_with("--") => flags.push(f.to_string()),
            _ => positional.push(a),
        }
    }
    let dir = positional
        .first()
        .cloned()
        .unwrap_or_else(|| "/data".into());
    let file = positional
        .get(1)
        .cloned()
        .unwrap_or_else(|| "data.txt".into());
    let content = positional
        .get(2)
        .cloned()
        .unwrap_or_else(|| "hello from emptydir".into());
    let path = format!("{}/{file}", dir.trim_end_matches('/'));
    let expect_fail = flags.iter().any(|f| f == "--expect-fail");
    let code = match std::fs::write(&path, &content) {
        Err(e) => {
            println!("write {path}: {e}");
            i32::from(!expect_fail)
        }
        Ok(()) if expect_fail => {
            println!("write {path}: unexpectedly succeeded");
            1
        }
        Ok(()) if flags.iter().any(|f| f == "--write-only") => {
            println!("wrote {path}");
            0
        }
        Ok(()) => match std::fs::read_to_string(&path) {
            Ok(back) => {
                println!("read {path}: {back}");
                0
            }
            Err(e) => {
                println!("read {path}: {e}");
                1
            }
        },
    };
    std::thread::sleep(Duration::from_secs(sleep));
    std::process::exit(code);
}
