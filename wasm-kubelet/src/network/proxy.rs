//! (kube-proxy role: being built)
