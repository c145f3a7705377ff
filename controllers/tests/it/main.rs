//! Controller tests against the in-process apiserver, with no kubelet: tests play the kubelet by
//! writing pods' status themselves. One test binary keeps link time low.

mod common;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
mod hpa;
mod job;
mod leader;
mod nodeipam;
mod nodelifecycle;
mod replicaset;
mod volumes;
