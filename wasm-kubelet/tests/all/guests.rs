//! The example guests (examples/guests), built once per test run for wasm32-wasip1 and
//! wasm32-wasip2 by cargo in the examples workspace (its own target dir and lock).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Which WASI target a guest was built for.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    P1,
    P2,
}

impl Target {
    pub fn triple(self) -> &'static str {
        match self {
            Self::P1 => "wasm32-wasip1",
            Self::P2 => "wasm32-wasip2",
        }
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn build() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = examples_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .args(["build", "--release", "--target", "wasm32-wasip1"])
            .args(["--target", "wasm32-wasip2", "--target-dir"])
            .arg(dir.join("target"))
            .output()
            .map_err(|e| format!("running cargo in {}: {e}", dir.display()))?;
        if !out.status.success() {
            return Err(format!(
                "building the example guests failed (is `rustup target add wasm32-wasip1 \
                 wasm32-wasip2` done? scripts/setup does it):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    })
}

/// The path of guest `name` built for `target` (building all guests on first use).
pub fn path(name: &str, target: Target) -> PathBuf {
    if let Err(e) = build() {
        panic!("{e}");
    }
    examples_dir()
        .join("target")
        .join(target.triple())
        .join("release")
        .join(format!("{name}.wasm"))
}

/// `sha256:<hex>` of a file.
pub fn digest(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("guest readable");
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}
