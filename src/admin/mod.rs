//! Admin commands behind the CLI: reports over the locator and the tiers, and the jobs an
//! admin runs by hand.

mod import;
mod progress;
mod status;
mod tier;
mod transcode;

pub use import::{import, ImportError, ImportSummary, IMPORT_AE};
pub use status::{status, StatusReport};
pub use tier::{locate, restore, tier_run, Located, TierError, TierSummary};
pub use transcode::{parse_roi, transcode, TranscodeError, TranscodeSummary};
