//! Logs an increasing counter forever, one line every `INTERVAL_MS` (default 1000) ms.
use std::time::Duration;

fn main() {
    let interval = std::env::var("INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    for i in 0u64.. {
        println!("count {i}");
        std::thread::sleep(Duration::from_millis(interval));
    }
}
