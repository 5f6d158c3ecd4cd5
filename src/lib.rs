//! Strata: PACS storage middleware. Modalities push studies over DICOM into the online tier;
//! the locator indexes where every instance lives. See README.md for the architecture map.

#![forbid(unsafe_code)]

// jemalloc is the process's malloc (built with unprefixed symbols): Rust's allocations (through
// the system allocator), SQLite's and OpenJPEG's alike. It gives freed pages back to the system
// within seconds (`dirty_decay_ms`), where glibc's malloc kept them in up to 16 arenas and the
// server's RSS climbed through an hour's soak; and it says how much it holds (`/metrics`'
// `strata_heap_*`). The linker takes jemalloc's `malloc` from its static archive with the
// object that holds `mallctl`, which those gauges call, so it replaces libc's in the `strata`
// binary and in any other that reaches the metrics code; elsewhere it depends on the link
// order. `nm -D BINARY | grep -w malloc` tells: a `T` line is jemalloc's. Not
// `tikv-jemallocator` as Rust's global allocator: openjp2's wavelet code asks Rust's allocator
// for zero bytes, which that allocator may not be asked for, and jemalloc's sized free then
// corrupted its heap.
use tikv_jemalloc_sys as _;

pub mod admin;
pub mod archive;
pub mod audit;
pub mod backup;
pub mod buffers;
pub mod codec;
pub mod commitment;
pub mod config;
pub mod convert;
pub mod dataset;
pub mod durable;
pub mod identifier;
pub mod ingest;
pub mod jobs;
pub mod lifecycle;
pub mod locator;
pub mod metrics;
pub mod model;
pub mod net;
pub mod online;
pub mod query;
pub mod reader;
pub mod renditions;
pub mod retrieve;
pub mod server;
pub mod service;
pub mod throttle;
pub mod tiering;
pub mod web;
pub mod wsi;

#[cfg(test)]
mod hostile_paths;
