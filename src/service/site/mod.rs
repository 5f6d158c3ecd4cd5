//! What the site holds and how its work goes, as `strata status`, `strata schedule` and the
//! status page show it: totals per tier and copy kind, queues, Storage Commitment requests,
//! the last run of every job, the processes holding leases ([`status`]); the workers'
//! windows and what their next pass would take on ([`schedule`]).

pub mod history;
pub mod schedule;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::locator::{Locator, LocatorError};

pub use history::{History, Line, Sampler};

/// Everything the status page shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// `[node] id` of the server answering.
    pub node: String,
    pub status: status::StatusReport,
    pub schedule: schedule::ScheduleReport,
    pub history: History,
}

/// Reads the site's overview for the status page.
#[derive(Debug, Clone)]
pub struct Site {
    locator: Arc<Locator>,
    config: Arc<Config>,
}

impl Site {
    pub fn new(locator: Arc<Locator>, config: Arc<Config>) -> Site {
        Site { locator, config }
    }

    /// The sampler this server runs for the page's history.
    pub fn sampler(&self) -> Sampler {
        Sampler {
            locator: self.locator.clone(),
            every: Duration::from_secs(self.config.status.sample_secs),
            keep: self.keep(),
        }
    }

    fn keep(&self) -> Duration {
        Duration::from_secs(self.config.status.keep_hours * 3600)
    }

    pub async fn overview(&self) -> Result<Overview, LocatorError> {
        Ok(Overview {
            node: self.locator.node().to_string(),
            status: status::report(&self.locator, None).await?,
            schedule: schedule::report(&self.config, &self.locator).await?,
            history: History::read(&self.locator, self.keep()).await?,
        })
    }
}
