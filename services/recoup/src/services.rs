//! Which services a process runs, and the topics they use.

use event_backbone::TopicSpec;
use event_backbone::topics::{
    self, ACCESS, COLLECTIONS_DEALS, DEBT_CASES, PAYGO_METRICS, PAYGO_SNAPSHOTS,
};

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub case_lifecycle: bool,
    pub projection: bool,
    pub snapshot_importer: bool,
    /// Runs only when sources to pull are configured ([`PlatformConfig::pull`]).
    pub export_puller: bool,
}

impl Services {
    /// Every service (`recoup up`).
    pub const ALL: Services = Services {
        case_lifecycle: true,
        projection: true,
        snapshot_importer: true,
        export_puller: true,
    };
    /// No service; set the ones wanted.
    pub const NONE: Services = Services {
        case_lifecycle: false,
        projection: false,
        snapshot_importer: false,
        export_puller: false,
    };

    /// case-lifecycle alone (`recoup case-lifecycle`).
    pub const CASE_LIFECYCLE: Services = Services {
        case_lifecycle: true,
        ..Services::NONE
    };
    /// The projection alone (`recoup projection`).
    pub const PROJECTION: Services = Services {
        projection: true,
        ..Services::NONE
    };
    /// The snapshot importer alone (`recoup snapshot-importer`).
    pub const SNAPSHOT_IMPORTER: Services = Services {
        snapshot_importer: true,
        ..Services::NONE
    };
    /// The export puller alone (`recoup pull`).
    pub const EXPORT_PULLER: Services = Services {
        export_puller: true,
        ..Services::NONE
    };

    /// True when the process serves requests of its own (gRPC or HTTP APIs), so checks
    /// credentials: every service but the export puller.
    pub fn serves_requests(&self) -> bool {
        self.case_lifecycle || self.projection || self.snapshot_importer
    }

    /// The topics these services write or read.
    pub fn topics(&self) -> Vec<TopicSpec> {
        let uses = |topic: &TopicSpec| match topic.name {
            n if n == DEBT_CASES.name => self.case_lifecycle || self.projection,
            n if n == PAYGO_SNAPSHOTS.name => self.snapshot_importer || self.projection,
            n if n == COLLECTIONS_DEALS.name => self.export_puller || self.projection,
            // The projection's metrics stage publishes PAYGo metrics.
            n if n == PAYGO_METRICS.name => self.projection,
            // Only with API keys on: see `platform::topics`.
            n if n == ACCESS.name => false,
            _ => self.snapshot_importer || self.export_puller,
        };
        topics::ALL.iter().filter(|t| uses(t)).copied().collect()
    }
}
