//! Allocates (and touches) 1 MiB more every step until memory runs out.
fn main() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
        println!("holding {} MiB", held.len());
    }
}
