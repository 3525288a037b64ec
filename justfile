# List the recipes.
default:
    @just --list

# Run the test suite.
test *args:
    python -m pytest -q {{args}}

# Measure throughput, latency and memory against a plain chain and a threads design.
bench *args:
    python benchmarks/bench_chain.py {{args}}

# Measure what the metrics server, a scraper and the live table cost a 10-stage chain.
bench-observe *args:
    python benchmarks/bench_observe.py {{args}}

# Lint and check formatting.
lint:
    ruff check nanostream tests benchmarks examples
    ruff format --check nanostream tests benchmarks examples

# Run the quickstart pipeline.
demo:
    python examples/quickstart.py

# Regenerate the JSON Schema of pipeline files from the node declarations.
schema:
    python -m nanostream schema -o schemas/nanostream.schema.json
