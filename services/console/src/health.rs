//! Health: whether this process answers for each of its services and whether Kafka answers, as
//! the standard gRPC health service of the process tells it (`grpc.health.v1.Health/Check`,
//! called in process like every other page's service); and, for admins, how far each read model
//! is behind its topic (`recoup.v1.ReadModels/GetLag`).

use axum::extract::State;
use axum::http::{Extensions, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use recoup_access::Action;
use recoup_proto::v1;
use recoup_proto::v1::read_models_client::ReadModelsClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::backend::{explain, request};
use crate::pages::{answer, page};
use crate::{Console, SignedIn};

/// The services a process may run: the name the health service knows, what it does.
const SERVICES: [(&str, &str); 4] = [
    (
        "recoup.v1.DebtCollectionCases",
        "Case commands (case-lifecycle)",
    ),
    ("recoup.v1.Query", "Queries and read models (projection)"),
    ("recoup.v1.SnapshotImports", "Snapshot imports"),
    ("recoup.v1.ApiKeys", "API keys"),
];

/// What one check said: a word for the table (also its `data-status`), and a sentence.
fn state(answer: Result<ServingStatus, tonic::Status>) -> (&'static str, String) {
    match answer {
        Ok(ServingStatus::Serving) => ("serving", "Serving.".to_owned()),
        Ok(ServingStatus::NotServing) => ("not-serving", "Not serving.".to_owned()),
        Ok(other) => ("unknown", format!("{}.", other.as_str_name())),
        Err(status) if status.code() == tonic::Code::NotFound => {
            ("not-here", "Not run by this process.".to_owned())
        }
        Err(status) => ("unknown", status.message().to_owned()),
    }
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
) -> Response {
    let health = HealthClient::new(console.backend.grpc());
    let check = |service: &str| {
        let mut health = health.clone();
        let asked = request(
            &session,
            &browser,
            HealthCheckRequest {
                service: service.to_owned(),
            },
        );
        async move {
            let answer = health.check(asked).await?.into_inner();
            Ok(ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown))
        }
    };
    let lag = async {
        if !session.may(Action::Operate) {
            return None;
        }
        let mut read_models = ReadModelsClient::new(console.backend.grpc());
        let asked = request(&session, &browser, v1::GetLagRequest {});
        Some(read_models.get_lag(asked).await.map(|r| r.into_inner()))
    };
    let (kafka, cases, query, imports, keys, lag) = tokio::join!(
        check(""),
        check(SERVICES[0].0),
        check(SERVICES[1].0),
        check(SERVICES[2].0),
        check(SERVICES[3].0),
        lag,
    );
    let kafka = match kafka {
        Ok(ServingStatus::Serving) => ("serving", "Kafka answers."),
        Ok(_) => (
            "not-serving",
            "Kafka does not answer: commands wait in the outbox, imports are refused, the read \
             models stand still until it answers again.",
        ),
        Err(_) => ("unknown", "The process does not say."),
    };
    let rows = SERVICES
        .iter()
        .zip([cases, query, imports, keys].map(state))
        .collect::<Vec<_>>();
    let body = html! {
        p data-status=(kafka.0) id="kafka" { strong { "Kafka: " } (kafka.1) }
        table id="services" {
            caption.visually-hidden { "The services of this process" }
            thead { tr { th scope="col" { "Service" } th scope="col" { "gRPC name" } th scope="col" { "State" } } }
            tbody {
                @for ((name, what), (word, sentence)) in &rows {
                    tr data-service=(name) data-status=(word) {
                        th scope="row" { (what) }
                        td { code { (name) } }
                        td { (sentence) }
                    }
                }
            }
        }
        h2 id="lag-title" { "Consumer lag" }
        @match lag {
            None => p.help { "Consumer lag is shown to admins." },
            Some(Ok(lag)) => (lag_table(&lag)),
            // A process without the projection has no read model to lag.
            Some(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                p { "This process runs no read model." }
            }
            Some(Err(status)) => p.error role="alert" { (explain(&status)) },
        }
    };
    answer(StatusCode::OK, page("Health", Some(&session), body))
}

/// Statistics older than this say the consumer is not polling: three of its intervals.
const LAG_STALE_SECONDS: i64 = 15;

fn lag_table(lag: &v1::GetLagResponse) -> Markup {
    let name = |read_model: i32| match v1::ReadModel::try_from(read_model) {
        Ok(v1::ReadModel::Cases) => "Cases",
        Ok(v1::ReadModel::Accounts) => "PAYGo accounts",
        Ok(v1::ReadModel::Deals) => "Collections deals",
        _ => "Unknown",
    };
    let now = chrono::Utc::now();
    html! {
        table id="lag" aria-labelledby="lag-title" {
            thead { tr { th scope="col" { "Read model" } th scope="col" { "Topic" } th.num scope="col" { "Messages behind" } th scope="col" { "Per partition" } th scope="col" { "Measured" } } }
            tbody {
                @for m in &lag.read_models {
                    tr data-read-model=(name(m.read_model)) {
                        th scope="row" { (name(m.read_model)) }
                        td { code { (m.topic) } }
                        @if m.measured {
                            @let (ago, stale) = measured_ago(m.measured_at.as_ref(), now);
                            td.num data-lag=(m.messages) { (m.messages) }
                            td { (per_partition(m)) }
                            td data-stale=(stale) { (ago) @if stale { " — stale: the consumer is not polling" } }
                        } @else {
                            td.num { "—" }
                            td colspan="2" { "Not measured: its consumer has not reported yet, or its projector stopped." }
                        }
                    }
                }
            }
        }
        p.help { "As of each consumer's last statistics, every 5 seconds, over every tenant; also on " code { "/metrics" } " as " code { "recoup_consumer_lag" } "." }
    }
}

/// The messages behind per partition, then the partitions whose lag is not known yet.
fn per_partition(m: &v1::ReadModelLag) -> String {
    let mut parts: Vec<String> = m
        .partitions
        .iter()
        .map(|p| format!("{}: {}", p.partition, p.messages))
        .collect();
    if !m.unknown_partitions.is_empty() {
        let unknown: Vec<String> = m.unknown_partitions.iter().map(i32::to_string).collect();
        parts.push(format!("not known yet: {}", unknown.join(", ")));
    }
    if parts.is_empty() {
        return "No partition held.".to_owned();
    }
    parts.join(", ")
}

/// How long ago a measure was taken ("3 s ago"), and whether that is stale.
fn measured_ago(
    at: Option<&prost_types::Timestamp>,
    now: chrono::DateTime<chrono::Utc>,
) -> (String, bool) {
    match at.and_then(recoup_proto::from_timestamp) {
        Some(at) => {
            let seconds = (now - at).num_seconds().max(0);
            (format!("{seconds} s ago"), seconds > LAG_STALE_SECONDS)
        }
        None => ("at an unknown time".to_owned(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_reads_per_partition_and_ages() {
        let mut m = v1::ReadModelLag {
            partitions: vec![
                v1::PartitionLag {
                    partition: 0,
                    messages: 4,
                },
                v1::PartitionLag {
                    partition: 2,
                    messages: 0,
                },
            ],
            unknown_partitions: vec![1],
            ..Default::default()
        };
        assert_eq!(per_partition(&m), "0: 4, 2: 0, not known yet: 1");
        m.partitions.clear();
        m.unknown_partitions.clear();
        assert_eq!(per_partition(&m), "No partition held.");
        let now = chrono::Utc::now();
        let at = |seconds| recoup_proto::to_timestamp(now - chrono::Duration::seconds(seconds));
        assert_eq!(
            measured_ago(Some(&at(3)), now),
            ("3 s ago".to_owned(), false)
        );
        assert_eq!(
            measured_ago(Some(&at(16)), now),
            ("16 s ago".to_owned(), true)
        );
        assert!(measured_ago(None, now).1);
    }

    #[test]
    fn each_answer_of_the_health_service_reads_as_a_state() {
        assert_eq!(state(Ok(ServingStatus::Serving)).0, "serving");
        assert_eq!(state(Ok(ServingStatus::NotServing)).0, "not-serving");
        let absent = tonic::Status::not_found("unknown service");
        assert_eq!(
            state(Err(absent)),
            ("not-here", "Not run by this process.".to_owned())
        );
        let failed = tonic::Status::internal("broken");
        assert_eq!(state(Err(failed)), ("unknown", "broken".to_owned()));
    }
}
