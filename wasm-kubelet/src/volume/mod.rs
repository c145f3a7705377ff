//! The storage plugin (being built).
