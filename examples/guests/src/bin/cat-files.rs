//! Prints each file named in its arguments under a `==> path <==` header (a missing or
//! unreadable file prints `==> path: error <==`). With `--watch SECS` it keeps re-reading every
//! second for SECS seconds and prints a file again (`==> path (changed) <==`) when it changes.
use std::time::{Duration, Instant};

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn show(path: &str, content: &Result<String, String>, changed: bool) {
    match content {
        Ok(text) => {
            let note = if changed { " (changed)" } else { "" };
            println!("==> {path}{note} <==");
            println!("{}", text.trim_end_matches('\n'));
        }
        Err(e) => println!("==> {path}: {e} <=="),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut watch = None;
    if let Some(i) = args.iter().position(|a| a == "--watch") {
        let secs = args
            .get(i + 1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(60);
        watch = Some(Duration::from_secs(secs));
        args.drain(i..(i + 2).min(args.len()));
    }
    let mut seen: Vec<Result<String, String>> = args.iter().map(|p| read(p)).collect();
    for (path, content) in args.iter().zip(&seen) {
        show(path, content, false);
    }
    let Some(watch) = watch else {
        let failed = seen.iter().any(Result::is_err);
        std::process::exit(i32::from(failed));
    };
    let start = Instant::now();
    while start.elapsed() < watch {
        std::thread::sleep(Duration::from_secs(1));
        for (path, last) in args.iter().zip(seen.iter_mut()) {
            let now = read(path);
            if now != *last {
                show(path, &now, true);
                *last = now;
            }
        }
    }
}
