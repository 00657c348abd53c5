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

fn lag_table(lag: &v1::GetLagResponse) -> Markup {
    let name = |read_model: i32| match v1::ReadModel::try_from(read_model) {
        Ok(v1::ReadModel::Cases) => "Cases",
        Ok(v1::ReadModel::Accounts) => "PAYGo accounts",
        Ok(v1::ReadModel::Deals) => "Collections deals",
        _ => "Unknown",
    };
    html! {
        table id="lag" aria-labelledby="lag-title" {
            thead { tr { th scope="col" { "Read model" } th scope="col" { "Topic" } th.num scope="col" { "Messages behind" } th scope="col" { "Per partition" } } }
            tbody {
                @for m in &lag.read_models {
                    tr data-read-model=(name(m.read_model)) {
                        th scope="row" { (name(m.read_model)) }
                        td { code { (m.topic) } }
                        @if m.measured {
                            td.num data-lag=(m.messages) { (m.messages) }
                            td { @for (i, p) in m.partitions.iter().enumerate() { @if i > 0 { ", " } (p.partition) ": " (p.messages) } }
                        } @else {
                            td.num { "—" }
                            td { "Not measured yet (every 5 seconds)." }
                        }
                    }
                }
            }
        }
        p.help { "As of the consumers' last statistics, every 5 seconds; also on " code { "/metrics" } " as " code { "recoup_consumer_lag" } "." }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
