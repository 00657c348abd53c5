//! How to reach Kafka.

/// Connection settings shared by every producer and consumer of a process. Its `Debug` masks
/// secret property values.
#[derive(Clone)]
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

    /// Whether the operator gave `key` (then recoup's own default for it stays unset).
    pub fn given(&self, key: &str) -> bool {
        self.properties.iter().any(|(k, _)| k == key)
    }

    /// The pass-through properties as `key=value` with secret values masked, for start-up logs.
    pub fn masked_properties(&self) -> Vec<String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                if is_secret_property(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect()
    }

    /// `text` (an error, a log line) with the value of every secret property masked.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.properties)
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("embedded", &self.embedded)
            .field("properties", &self.masked_properties())
            .finish()
    }
}

/// Whether a Kafka property's value is a secret: its name contains `password`, `secret`,
/// `key` or `token` (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`).
pub fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "key", "token"]
        .iter()
        .any(|s| key.contains(s))
}

/// `text` with the value of every secret property among `properties` replaced by `***`
/// (librdkafka's configuration errors quote the value they refuse).
pub fn redact(text: &str, properties: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (key, value) in properties {
        if is_secret_property(key) && !value.is_empty() {
            text = text.replace(value.as_str(), "***");
        }
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;

    /// librdkafka is built with OpenSSL: TLS and the SASL mechanisms a managed Kafka asks for
    /// are accepted when a client is made (without TLS support the first one fails with
    /// "OpenSSL not available at build time"). No broker is needed to make a client.
    #[test]
    fn tls_and_sasl_are_built_in() {
        let cases = [
            ("SSL", None),
            ("SASL_SSL", Some("PLAIN")),
            ("SASL_SSL", Some("SCRAM-SHA-256")),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SASL_SSL", Some("OAUTHBEARER")),
        ];
        for (protocol, mechanism) in cases {
            let mut config = KafkaConfig::external("127.0.0.1:9");
            config.properties = vec![("security.protocol".into(), protocol.into())];
            if let Some(mechanism) = mechanism {
                config.properties.extend([
                    ("sasl.mechanisms".into(), mechanism.into()),
                    ("sasl.username".into(), "recoup".into()),
                    ("sasl.password".into(), "secret".into()),
                ]);
            }
            if mechanism == Some("OAUTHBEARER") {
                config.properties.truncate(2);
            }
            let made: Result<BaseProducer, _> = config.client_config().create();
            assert!(made.is_ok(), "{protocol} {mechanism:?}: {:?}", made.err());
        }
    }
}
