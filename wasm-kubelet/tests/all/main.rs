//! Integration tests of the wasm-kubelet, in one binary to keep link time low.

mod auth;
mod bench;
mod cluster;
mod guests;
mod kubelet;
mod logs;
mod network;
mod objects;
mod registry;
mod runtime;
mod volumes;
