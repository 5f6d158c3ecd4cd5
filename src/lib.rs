//! Strata: PACS storage middleware. Modalities push studies over DICOM into the online tier;
//! the locator indexes where every instance lives. See README.md for the architecture map.

#![forbid(unsafe_code)]

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
pub mod retrieve;
pub mod server;
pub mod service;
pub mod throttle;
pub mod tiering;
pub mod web;

#[cfg(test)]
mod hostile_paths;
