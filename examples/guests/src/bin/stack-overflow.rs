//! Recurses without bound: the runtime sees a stack-overflow trap.
#[allow(unconditional_recursion)]
fn depth(n: u64) -> u64 {
    std::hint::black_box(depth(std::hint::black_box(n + 1)) + 1)
}

fn main() {
    println!("recursing");
    println!("{}", depth(0));
}
