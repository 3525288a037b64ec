# List the recipes.
default:
    @just --list

# Run the test suite.
test *args:
    python -m pytest -q {{args}}

# Measure throughput, idle latency, a CSV pipeline and memory against plain Python, threads, trio, asyncio and bytewax (--quick: a short run).
bench *args:
    python benchmarks/bench_chain.py {{args}}

# Measure consume-transform-produce through Kafka against a bare kafka-python loop.
bench-kafka *args:
    python benchmarks/bench_kafka.py {{args}}

# Measure consume -> CPU-bound stage -> produce on 1 process against 2 in one consumer group.
bench-scale *args:
    python benchmarks/bench_scale.py {{args}}

# Measure files per second through a watched folder against a bare watchdog script.
bench-files *args:
    python benchmarks/bench_files.py {{args}}

# Measure what the metrics server, a scraper and the live table cost a 10-stage chain.
bench-observe *args:
    python benchmarks/bench_observe.py {{args}}

# Measure the built-in Map, Filter, Sampler and CsvParser against hand-written nodes.
bench-nodes *args:
    python benchmarks/bench_nodes.py {{args}}

# Measure each connector (stdio, HTTP, SQL) against a hand-written loop with the same library.
bench-connectors *args:
    python benchmarks/bench_connectors.py {{args}}

# Lint and check formatting.
lint:
    ruff check nanostream tests benchmarks examples
    ruff format --check nanostream tests benchmarks examples

# Run the quickstart pipeline.
demo:
    python examples/quickstart.py

# Regenerate the JSON Schemas of pipeline files (from the node declarations) and of test files.
schema:
    python -m nanostream schema -o schemas/nanostream.schema.json
    python -m nanostream test --schema -o schemas/nanostream-tests.schema.json

# Regenerate the node reference (docs/reference.md) from the node declarations.
reference:
    python -m nanostream nodes --markdown -o docs/reference.md

# Regenerate the node reference, then build the documentation site into docs/_build/html (warnings are errors).
docs: reference
    python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Measure the loop, thread and process executors against each other and multiprocessing.Pool.
bench-executors *args:
    python benchmarks/bench_executors.py {{args}}

# Measure a keyed tumbling-window count over 1M items: NanoStream's Window against bytewax and a plain loop.
bench-state *args:
    python benchmarks/bench_state.py {{args}}
