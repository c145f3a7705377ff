//! (network plugin: being built)
