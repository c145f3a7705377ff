//! wasmkube node agent (see its issue): not built yet.
