//! Collector configurations: how a collector processes cases (docs/domain.md §3).

use chrono::Duration;

use crate::model::Environment;

/// How one collector processes cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfiguration {
    pub id: String,
    /// Environments a case may be created in with this configuration.
    pub environments: Vec<Environment>,
    /// Cases start in `PREPARING` instead of `REVIEWING`.
    pub skip_review: bool,
    /// A case still `PROCESSING` this long after it started is failed with "processing timeout".
    pub processing_timeout: Duration,
}

impl CollectorConfiguration {
    /// True when cases in `environment` may use this configuration.
    pub fn supports(&self, environment: Environment) -> bool {
        self.environments.contains(&environment)
    }
}

/// The configurations known to the service; one of them is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfigurations {
    configurations: Vec<CollectorConfiguration>,
    default_id: String,
}

/// The configuration set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    #[error("no collector configuration is defined")]
    Empty,
    #[error("collector configuration id {0:?} is defined twice")]
    Duplicate(String),
    #[error("default collector configuration {0:?} is not defined")]
    UnknownDefault(String),
    #[error("collector configuration {0:?} supports no environment")]
    NoEnvironment(String),
    #[error("collector configuration {0:?} has a processing timeout that is not positive")]
    NonPositiveTimeout(String),
}

impl CollectorConfigurations {
    /// Builds a checked set; `default_id` names the one used when a case names none.
    pub fn new(
        configurations: Vec<CollectorConfiguration>,
        default_id: impl Into<String>,
    ) -> Result<Self, ConfigurationError> {
        let default_id = default_id.into();
        if configurations.is_empty() {
            return Err(ConfigurationError::Empty);
        }
        for (i, c) in configurations.iter().enumerate() {
            if configurations[..i].iter().any(|o| o.id == c.id) {
                return Err(ConfigurationError::Duplicate(c.id.clone()));
            }
            if c.environments.is_empty() {
                return Err(ConfigurationError::NoEnvironment(c.id.clone()));
            }
            if c.processing_timeout <= Duration::zero() {
                return Err(ConfigurationError::NonPositiveTimeout(c.id.clone()));
            }
        }
        if !configurations.iter().any(|c| c.id == default_id) {
            return Err(ConfigurationError::UnknownDefault(default_id));
        }
        Ok(Self {
            configurations,
            default_id,
        })
    }

    /// The configuration with this id.
    pub fn get(&self, id: &str) -> Option<&CollectorConfiguration> {
        self.configurations.iter().find(|c| c.id == id)
    }

    /// The configuration used when a case names none.
    pub fn default_configuration(&self) -> &CollectorConfiguration {
        self.get(&self.default_id)
            .unwrap_or(&self.configurations[0])
    }

    /// All configurations.
    pub fn iter(&self) -> impl Iterator<Item = &CollectorConfiguration> {
        self.configurations.iter()
    }
}

impl Default for CollectorConfigurations {
    /// One configuration `default`: both environments, with review, 14 days processing timeout.
    fn default() -> Self {
        Self {
            configurations: vec![CollectorConfiguration {
                id: "default".into(),
                environments: vec![Environment::Production, Environment::Test],
                skip_review: false,
                processing_timeout: Duration::days(14),
            }],
            default_id: "default".into(),
        }
    }
}
