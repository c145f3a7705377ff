//! Writes output as fast as it can, forever: log rotation must keep the disk bounded.
fn main() {
    let line = "x".repeat(1000);
    for i in 0u64.. {
        println!("{i} {line}");
    }
}
