"""A gRPC client that knows recoup only through server reflection (no .proto files, no generated
code): it creates a case, drives it to CLOSED, gets ABORTED on a stale version, and reads the case
from recoup.v1.Query within a second. Usage: reflection_client.py HOST:PORT"""

import os
import sys
import time

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

KEY = os.environ.get("RECOUP_API_KEY")
METADATA = [("authorization", f"Bearer {KEY}")] if KEY else [("x-recoup-tenant", "reflection")]


def main(addr: str, catch_up_seconds: float) -> None:
    channel = grpc.insecure_channel(addr)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for expected in ("recoup.v1.DebtCollectionCases", "recoup.v1.Query", "grpc.health.v1.Health"):
        assert expected in services, f"{expected} not listed: {sorted(services)}"
    pool = DescriptorPool(database)

    def call(service: str, method: str, body: dict, metadata=METADATA) -> dict:
        descriptor = pool.FindMethodByName(f"{service}.{method}")
        request_type = message_factory.GetMessageClass(descriptor.input_type)
        response_type = message_factory.GetMessageClass(descriptor.output_type)
        stub = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        reply = stub(json_format.ParseDict(body, request_type()), metadata=metadata, timeout=10)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True)

    cases = "recoup.v1.DebtCollectionCases"
    if KEY:
        try:
            call("recoup.v1.Query", "ListCases", {}, metadata=[])
            raise AssertionError("a call without a credential was served")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    case = call(cases, "CreateCase", {"content": {
        "external_id": f"reflection-{time.time_ns()}",
        "reference": f"REFL-{time.time_ns()}",
        "environment": "ENVIRONMENT_TEST",
        "currency": "EUR",
        "line_items": [{"unique_id": "1", "name": "loan", "quantity": 1, "amount_minor": "12500"}],
        "due_date": "2026-01-31",
    }})["case"]
    assert case["state"] == "CASE_STATE_REVIEWING", case
    created_version = int(case["version"])

    def step(method: str, extra: dict | None = None) -> dict:
        body = {"case_id": case["id"], "expected_version": case["version"], **(extra or {})}
        return call(cases, method, body)["case"]

    case = step("MarkReviewed")
    case = step("MarkPrepared")
    case = step("StartProcessing")
    case = step("AddPaymentReceipt", {"receipt_external_id": "r-1", "amount_minor": "2500"})
    case = step("CloseCase")
    assert case["state"] == "CASE_STATE_CLOSED" and int(case["version"]) == 6, case

    try:
        call(cases, "CloseCase", {"case_id": case["id"], "expected_version": created_version})
        raise AssertionError("a stale version was accepted")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.ABORTED, error
        assert "expected version 1" in error.details(), error.details()

    deadline = time.monotonic() + catch_up_seconds
    while True:
        try:
            seen = call("recoup.v1.Query", "GetCase", {"case_id": case["id"]})["case"]
            if seen["state"] == "CASE_STATE_CLOSED" and int(seen["version"]) == 6:
                break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        assert time.monotonic() < deadline, \
            f"the read model did not show the case within {catch_up_seconds} s"
        time.sleep(0.02)
    print(f"reflection client: case {case['id']} CLOSED at version 6, stale version ABORTED, "
          f"read model caught up within {catch_up_seconds} s")


if __name__ == "__main__":
    # Embedded: within a second. On an external broker the projection joins its consumer
    # group first (a few seconds on the first join), so the caller may allow more.
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
