//! `strata status`: what is stored, per tier.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::locator::{Locator, LocatorError, TierTotals};
use crate::model::Tier;

/// The status report; its JSON form is a contract other tools rely on.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
    /// Per tier; `online` and `archive` are always present.
    pub tiers: BTreeMap<&'static str, TierTotals>,
}

/// Builds the report from the locator.
pub async fn status(config: &Config) -> Result<StatusReport, LocatorError> {
    let locator = Locator::open(&config.locator).await?;
    let totals = locator.totals().await?;
    let mut tiers = BTreeMap::new();
    tiers.insert(Tier::Online.as_str(), TierTotals::default());
    tiers.insert(Tier::Archive.as_str(), TierTotals::default());
    for (tier, t) in locator.tier_totals().await? {
        tiers.insert(tier.as_str(), t);
    }
    locator.close().await;
    Ok(StatusReport {
        patients: totals.patients,
        studies: totals.studies,
        series: totals.series,
        instances: totals.instances,
        bytes: totals.bytes,
        tiers,
    })
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "patients   {}", self.patients)?;
        writeln!(f, "studies    {}", self.studies)?;
        writeln!(f, "series     {}", self.series)?;
        writeln!(f, "instances  {}", self.instances)?;
        writeln!(f, "bytes      {}", self.bytes)?;
        for (tier, t) in &self.tiers {
            writeln!(
                f,
                "tier {tier:<8} {} instances, {} bytes",
                t.instances, t.bytes
            )?;
        }
        Ok(())
    }
}
