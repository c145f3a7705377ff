//! Prints a line, then executes `unreachable`: the runtime sees a trap, not an exit.
fn main() {
    println!("about to trap");
    #[cfg(target_family = "wasm")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_family = "wasm"))]
    std::process::abort();
}
