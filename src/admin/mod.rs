//! Admin commands behind the CLI: reports over the locator and the tiers.

mod import;
mod status;

pub use import::{import, ImportError, ImportSummary, IMPORT_AE};
pub use status::{status, StatusReport};
