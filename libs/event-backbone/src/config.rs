//! How to reach Kafka.

/// Connection settings shared by every producer and consumer of a process.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,...` bootstrap servers.
    pub brokers: String,
    /// True when `brokers` is recoup's in-process mock cluster.
    pub embedded: bool,
    /// Further librdkafka properties passed through unchanged (`security.protocol`,
    /// `sasl.mechanisms`, ...). Secrets among them are never logged.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Settings for an external cluster.
    pub fn external(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            embedded: false,
            properties: Vec::new(),
        }
    }

    /// Builds a librdkafka configuration with the bootstrap servers and the pass-through
    /// properties set.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The pass-through properties as `key=value` with secret values masked, for start-up logs.
    pub fn masked_properties(&self) -> Vec<String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key", "token"]
                    .iter()
                    .any(|s| k.contains(s));
                if secret {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect()
    }
}
