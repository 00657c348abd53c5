//! End to end in one process: gRPC command → event store → outbox → embedded Kafka →
//! projection → gRPC query, over loopback with real sled files.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use recoup_proto::v1;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_goes_from_command_to_query() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let (mut cases, mut query) = clients(&p).await;

    let created = create(&mut cases, "acme", "REF-1", 12_345).await;
    assert_eq!(created.version, 1);
    assert_eq!(created.state, v1::CaseState::Reviewing as i32);
    assert_eq!(created.amount_minor, 12_345);

    let closed = drive_to_closed(&mut cases, "acme", created.clone()).await;
    assert_eq!(closed.state, v1::CaseState::Closed as i32);
    assert_eq!(closed.version, 6);
    assert_eq!(closed.collected_minor, 1);

    // A stale version is refused with both versions named.
    let stale = cases
        .close_case(req("acme", cmd(&created)))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert!(
        stale.message().contains("expected version 1"),
        "{}",
        stale.message()
    );
    assert!(
        stale.message().contains("at version 6"),
        "{}",
        stale.message()
    );

    // Read-your-writes on the command side.
    let got = stored(&mut cases, "acme", &created.id).await;
    assert_eq!(got, closed);

    // The read model catches up.
    let arrived = projected_at(&query, "acme", &created.id, 6).await;
    assert!(arrived, "the closed case reaches the read model");
    let in_read_model = projected(&mut query, "acme", &created.id).await.unwrap();
    assert_eq!(
        in_read_model, closed,
        "the read model holds what the store holds"
    );

    assert_eq!(
        stats_of(&mut query, "acme", v1::CaseState::Closed).await,
        (1, 12_345, 1)
    );
    // Another tenant sees nothing.
    assert_eq!(
        stats_of(&mut query, "other", v1::CaseState::Closed).await,
        (0, 0, 0)
    );
    let invisible = query
        .get_case(req(
            "other",
            v1::GetCaseRequest {
                case_id: created.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(invisible.code(), Code::NotFound);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_cases_filters_by_state_and_pages_in_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let (mut cases, mut query) = clients(&p).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let c = create(&mut cases, "t", &format!("L-{i}"), 100 + i).await;
        if i % 2 == 0 {
            cases.mark_reviewed(req("t", cmd(&c))).await.unwrap();
        }
        ids.push(c.id);
    }
    let all_there = eventually(Duration::from_secs(10), || {
        let mut q = query.clone();
        async move { stats_of(&mut q, "t", v1::CaseState::Preparing).await.0 == 4 }
    })
    .await;
    assert!(all_there);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_cases(req(
                "t",
                v1::ListCasesRequest {
                    state: 0,
                    page_size: 3,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.cases.len() <= 3);
        seen.extend(page.cases.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "every case once, in creation order");

    let preparing = query
        .list_cases(req(
            "t",
            v1::ListCasesRequest {
                state: v1::CaseState::Preparing as i32,
                page_size: 100,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let expected: Vec<_> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(
        preparing
            .cases
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    let bad = query
        .list_cases(req(
            "t",
            v1::ListCasesRequest {
                state: 0,
                page_size: 10,
                page_token: "garbage".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_map_to_grpc_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let (mut cases, _) = clients(&p).await;
    let case = create(&mut cases, "t", "E-1", 500).await;

    let mut future_due = content("E-2", 500);
    future_due.due_date = "2999-01-01".into();
    let e = refused_create(&mut cases, "t", future_due).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("due_date"), "{}", e.message());

    for (due, why) in [
        ("2026-1-1", "not zero-padded"),
        ("0000-01-01", "year 0"),
        ("1899-12-31", "before 1900"),
        ("2026-02-30", "no such day"),
        (" 2026-01-01", "a space"),
    ] {
        let mut odd = content("E-2", 500);
        odd.due_date = due.into();
        let e = refused_create(&mut cases, "t", odd).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{why}");
        assert!(e.message().contains("YYYY-MM-DD"), "{why}: {}", e.message());
    }
    let update = v1::UpdateCaseRequest {
        case_id: case.id.clone(),
        expected_version: case.version,
        changes: Some(v1::CaseChanges {
            due_date: Some("2026-1-1".into()),
            ..Default::default()
        }),
    };
    let e = cases.update_case(req("t", update)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("changes.due_date"), "{}", e.message());

    // A request that does not decode (field 1 with the wire type of a fixed64 where a message
    // is expected) is the sender's error.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbage {
        #[prost(fixed64, tag = "1")]
        content: u64,
    }
    let mut raw = tonic::client::Grpc::new(channel(&p).await);
    raw.ready().await.unwrap();
    let e = raw
        .unary(
            req("t", Garbage { content: 7 }),
            "/recoup.v1.DebtCollectionCases/CreateCase".parse().unwrap(),
            recoup_proto::codec::RecoupCodec::<Garbage, v1::CaseReply>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("does not decode"), "{e:?}");

    let mut bad_currency = content("E-3", 500);
    bad_currency.currency = "EUX".into();
    let e = refused_create(&mut cases, "t", bad_currency).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("currency"), "{}", e.message());

    let mut no_env = content("E-4", 500);
    no_env.environment = 0;
    let e = refused_create(&mut cases, "t", no_env).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("environment"), "{}", e.message());

    let mut zero = content("E-5", 0);
    zero.line_items[0].amount_minor = 0;
    let e = refused_create(&mut cases, "t", zero).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("amount_minor"), "{}", e.message());

    // Same external id, other content.
    let mut reused = content("E-1", 999);
    reused.external_id = case.external_id.clone();
    let e = refused_create(&mut cases, "t", reused).await;
    assert_eq!(e.code(), Code::AlreadyExists);
    // Same external id, same content: the original case.
    let again = create(&mut cases, "t", "E-1", 500).await;
    assert_eq!(again.id, case.id);
    assert_eq!(again.version, 1);

    let e = cases
        .start_processing(req("t", cmd(&case)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let e = cases
        .mark_reviewed(req(
            "t",
            v1::CaseCommand {
                case_id: "01a20090-0000-7000-8000-000000000000".into(),
                expected_version: 1,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let e = cases
        .mark_reviewed(req(
            "t",
            v1::CaseCommand {
                case_id: case.id.clone(),
                expected_version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("expected_version"));

    let closed = case_of(cases.close_case(req("t", cmd(&case))).await).unwrap();
    let e = cases
        .mark_reviewed(req("t", cmd(&closed)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("terminal"), "{}", e.message());

    let bad_tenant = cases
        .get_case(req(
            "no/slashes",
            v1::GetCaseRequest {
                case_id: case.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_tenant.code(), Code::InvalidArgument);

    // Nothing the refusals touched changed the case.
    let now = stored(&mut cases, "t", &case.id).await;
    assert_eq!(now, closed);
    let store = p.store().unwrap();
    assert_eq!(store.events_after("t", &case.id, 0).unwrap().len(), 2);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_reflection() {
    use recoup_proto::v1::debt_collection_cases_server::DebtCollectionCasesServer;
    use tonic::server::NamedService;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let ch = channel(&p).await;

    let mut health = HealthClient::new(ch.clone());
    for service in [
        <DebtCollectionCasesServer<case_lifecycle::grpc::CaseCommands> as NamedService>::NAME,
        "recoup.v1.Query",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    let mut reflection = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "recoup.v1.DebtCollectionCases",
        "recoup.v1.Query",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_processing_past_its_timeout_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.cases.collectors = recoup::settings::parse_collectors(
        r#"{"default":"quick","collectors":[{"id":"quick","environments":["TEST"],
            "skip_review":true,"processing_timeout_seconds":1}]}"#,
    )
    .unwrap();
    let p = start(c).await;
    let (mut cases, _) = clients(&p).await;
    let created = create(&mut cases, "t", "TO-1", 300).await;
    assert_eq!(
        created.state,
        v1::CaseState::Preparing as i32,
        "review skipped"
    );
    let pending = case_of(cases.mark_prepared(req("t", cmd(&created))).await).unwrap();
    let processing = case_of(cases.start_processing(req("t", cmd(&pending))).await).unwrap();
    let id = processing.id.clone();
    let failed = eventually(Duration::from_secs(10), || {
        let mut c = cases.clone();
        let id = id.clone();
        async move { stored(&mut c, "t", &id).await.state == v1::CaseState::Failed as i32 }
    })
    .await;
    assert!(failed, "the timeout task fails the case");
    let case = stored(&mut cases, "t", &id).await;
    assert_eq!(case.failure_reason, "processing timeout");
    assert_eq!(case.version, processing.version + 1);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_as_separate_processes_over_one_cluster() {
    use recoup::platform::Services;
    let kafka = event_backbone::EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lifecycle = start(config_for(
        a.path(),
        kafka.bootstrap_servers(),
        Services {
            case_lifecycle: true,
            ..Services::NONE
        },
    ))
    .await;
    let projection = start(config_for(
        b.path(),
        kafka.bootstrap_servers(),
        Services {
            projection: true,
            ..Services::NONE
        },
    ))
    .await;
    let (mut cases, _) = clients(&lifecycle).await;
    let (_, mut query) = clients(&projection).await;
    let c = create(&mut cases, "t", "SEP-1", 77).await;
    let closed = drive_to_closed(&mut cases, "t", c).await;
    let arrived = projected_at(&query, "t", &closed.id, 6).await;
    assert!(
        arrived,
        "the projection process sees the case-lifecycle process's events"
    );
    // Each process serves only its own service.
    let e = query
        .list_cases(req("t", v1::ListCasesRequest::default()))
        .await;
    assert!(e.is_ok());
    let (mut no_commands, _) = clients(&projection).await;
    let e = no_commands
        .get_case(req(
            "t",
            v1::GetCaseRequest {
                case_id: closed.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    lifecycle.shutdown().await.unwrap();
    projection.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_stay_exact_and_refuse_what_int64_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let (mut cases, query) = clients(&p).await;
    let a = create(&mut cases, "big", "MAX-1", i64::MAX).await;
    create(&mut cases, "big", "MAX-2", i64::MAX).await;
    // Two cases of i64::MAX: their total is exact in the read model, and the query says the
    // wire cannot carry it instead of answering a wrapped or capped number.
    let refused = eventually(Duration::from_secs(20), || {
        let mut q = query.clone();
        async move {
            let r = q.case_stats(req("big", v1::CaseStatsRequest {})).await;
            r.is_err_and(|e| e.code() == Code::OutOfRange)
        }
    })
    .await;
    assert!(refused, "CaseStats refuses a total beyond int64");
    let mut q = query.clone();
    let e = q
        .case_stats(req("big", v1::CaseStatsRequest {}))
        .await
        .unwrap_err();
    assert!(e.message().contains("amount in EUR of state"), "{e:?}");
    assert!(e.message().contains("18446744073709551614"), "{e:?}");
    // One goes: the other's amount is the total again, to the unit (a capped total would have
    // dropped to 0).
    cases.delete_case(req("big", cmd(&a))).await.unwrap();
    let exact = eventually(Duration::from_secs(20), || {
        let mut q = query.clone();
        async move {
            q.case_stats(req("big", v1::CaseStatsRequest {}))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(exact);
    let mut q = query.clone();
    assert_eq!(
        stats_of(&mut q, "big", v1::CaseState::Reviewing).await,
        (1, i64::MAX, 0)
    );
    p.shutdown().await.unwrap();
}
