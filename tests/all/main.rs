//! End-to-end tests: start the `wasmkube` binary on a temp data dir and a free port, and drive
//! it with the real `kubectl` and with kube-rs, as users do.

mod support;

mod client;
mod cluster;
mod durability;
mod etcd;
mod kubectl;
mod multinode;
mod pod_clients;
mod security;
mod services;
mod trace;
mod volumes;
