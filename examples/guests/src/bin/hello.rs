//! Greets its first argument (or `world`), shows the env it was given, and exits 0.
fn main() {
    let who = std::env::args().nth(1).unwrap_or_else(|| "world".into());
    println!("hello, {who}!");
    for (k, v) in std::env::vars() {
        println!("env {k}={v}");
    }
    eprintln!("hello wrote to stderr too");
}
