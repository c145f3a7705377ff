//! Appends `written by <POD_NAME>` to `DIR/log.txt` (DIR = first argument, default `/data`),
//! then prints the whole file and exits 0 (1 with `append DIR/log.txt: <error>` on failure).
use std::io::Write;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/data".into());
    let path = format!("{}/log.txt", dir.trim_end_matches('/'));
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "written by {pod}"));
    if let Err(e) = appended {
        println!("append {path}: {e}");
        std::process::exit(1);
    }
    match std::fs::read_to_string(&path) {
        Ok(all) => print!("{all}"),
        Err(e) => {
            println!("read {path}: {e}");
            std::process::exit(1);
        }
    }
}
