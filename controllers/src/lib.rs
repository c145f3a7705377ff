//! wasmkube controllers (see its issue): not built yet.
