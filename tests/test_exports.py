import importlib
import subprocess
import sys

import pytest

import nanostream
import nanostream.testing
from nanostream.nodes import BUILTIN_NODES

PUBLIC_NAMES = [
    "BlackHole",
    "ChannelSink",
    "ChannelSource",
    "ConstantEmitter",
    "DeadLetter",
    "Duration",
    "FailedItems",
    "FromParent",
    "GraphError",
    "GraphProblem",
    "GraphRun",
    "KeyedState",
    "NoKeyError",
    "NanoStreamGraph",
    "NanoStreamProcessor",
    "Node",
    "NodeError",
    "NodeOptions",
    "NodeStats",
    "PrintStreamProcessor",
    "Rejected",
    "SequenceEmitter",
    "WithAck",
    "__version__",
    "duration",
    "node_nursery",
    "run",
    "run_graph",
    "serve_metrics",
    # Every built-in node, imported on first use.
    *BUILTIN_NODES,
    "FileData",
    "KafkaRecord",
    "LateItem",
]
PUBLIC_NAMES = sorted(set(PUBLIC_NAMES))


def test_all_is_pinned():
    assert sorted(nanostream.__all__) == PUBLIC_NAMES
    assert len(set(nanostream.__all__)) == len(nanostream.__all__)


def test_every_public_name_is_importable():
    for name in nanostream.__all__:
        assert getattr(nanostream, name) is not None
        namespace = {}
        exec(f"from nanostream import {name}", namespace)
        assert namespace[name] is getattr(nanostream, name)


def test_public_classes_claim_the_package():
    for name in nanostream.__all__:
        value = getattr(nanostream, name)
        if isinstance(value, type):
            assert value.__module__.startswith("nanostream.")


def test_star_import():
    namespace = {}
    exec("from nanostream import *", namespace)
    assert {name for name in namespace if name != "__builtins__"} == set(PUBLIC_NAMES)


def test_version_matches_metadata():
    from importlib.metadata import version

    assert nanostream.__version__ == version("nanostream")


def test_testing_module_exports():
    assert sorted(nanostream.testing.__all__) == [
        "Collector",
        "collect",
        "process_items",
        "run_pipeline",
        "run_processor",
    ]
    module = importlib.import_module("nanostream.testing")
    for name in module.__all__:
        assert callable(getattr(module, name))


def test_import_leaves_the_optional_libraries_unloaded():
    code = (
        "import sys, nanostream; "
        "print(sorted(m for m in ('rich', 'prometheus_client', 'kafka', 'watchdog', "
        "'nanostream.observe') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "[]\n", result.stderr


def test_a_missing_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'nanostream' has no attribute 'Nope'"):
        nanostream.Nope  # noqa: B018
