//! Admin commands behind the CLI: reports over the locator and the tiers.

mod status;

pub use status::{status, StatusReport};
