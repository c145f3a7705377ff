//! Prints a line and exits with the code given as its first argument (default 3).
fn main() {
    let code = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(3);
    println!("exiting with {code}");
    std::process::exit(code);
}
