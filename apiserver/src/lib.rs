//! wasmkube-apiserver: a Kubernetes-compatible API server over a durable store.

pub mod errors;
pub mod resources;
pub mod storage;
