# Recipes mirror the README's commands; `just` alone lists them.

# List the recipes.
default:
    @{{just_executable()}} --list --unsorted

# Run every service on the embedded Kafka (data in ./data, gRPC on 127.0.0.1:50051).
up:
    cargo run --release -p recoup -- up

# Every service plus a simulated export API pulled as tenant "demo".
demo:
    cargo run --release -p recoup -- up --demo

# The whole test suite, as CI runs it.
test:
    cargo test --release --workspace

# Format every crate.
fmt:
    cargo fmt --all

# Formatting and lints as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings

# What CI runs: format, lints, tests (also on tansu), smoke test of `recoup up`, compose check.
ci:
    bash .ci/run

# Benchmarks quoted in the README.
bench:
    cargo bench -p recoup --bench commands
    cargo bench -p projection --bench apply
    cargo bench -p projection --bench metrics
    cargo bench -p snapshot-importer --bench import
    cargo bench -p export-puller --bench pull
    cargo bench -p recoup --bench storage
    cargo bench -p recoup --bench queries
    cargo bench -p recoup --bench console

# Create every recoup topic on an external cluster.
topics brokers:
    cargo run --release -p recoup -- topics ensure --kafka-brokers {{brokers}}
