# List the recipes.
default:
    @just --list

# Run the test suite.
test *args:
    python -m pytest -q {{args}}

# Measure throughput, latency and memory against a plain chain and a threads design.
bench *args:
    python benchmarks/bench_chain.py {{args}}

# Measure consume-transform-produce through Kafka against a bare kafka-python loop.
bench-kafka *args:
    python benchmarks/bench_kafka.py {{args}}

# Measure files per second through a watched folder against a bare watchdog script.
bench-files *args:
    python benchmarks/bench_files.py {{args}}

# Measure what the metrics server, a scraper and the live table cost a 10-stage chain.
bench-observe *args:
    python benchmarks/bench_observe.py {{args}}

# Measure the built-in Map, Filter, Sampler and CsvParser against hand-written nodes.
bench-nodes *args:
    python benchmarks/bench_nodes.py {{args}}

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

# Regenerate the node reference (docs/reference.md) from the node declarations.
docs:
    python -m nanostream nodes --markdown -o docs/reference.md

# Measure the loop, thread and process executors against each other and multiprocessing.Pool.
bench-executors *args:
    python benchmarks/bench_executors.py {{args}}
