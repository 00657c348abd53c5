# Recipes mirror the README's commands.

# Run every service on the embedded Kafka (data in ./data, gRPC on 127.0.0.1:50051).
up:
    cargo run --release -p recoup -- up

# The whole test suite, as CI runs it.
test:
    cargo test --release --workspace

# What CI runs: format, lints, tests, smoke test of `recoup up` with kcat.
ci:
    bash .ci/run

# Benchmarks quoted in the README.
bench:
    cargo bench -p recoup --bench commands
    cargo bench -p projection --bench apply
    cargo bench -p snapshot-importer --bench import
    cargo bench -p export-puller --bench pull

# Every service plus a simulated export API pulled as tenant "demo".
demo:
    cargo run --release -p recoup -- up --demo

# Create every recoup topic on an external cluster.
topics brokers:
    cargo run --release -p recoup -- topics ensure --kafka-brokers {{brokers}}
