//! wasmkube scheduler (see its issue): not built yet.
