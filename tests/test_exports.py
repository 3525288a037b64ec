import importlib

import nanostream
import nanostream.testing

PUBLIC_NAMES = [
    "BlackHole",
    "ChannelSink",
    "ChannelSource",
    "ConstantEmitter",
    "DeadLetter",
    "FailedItems",
    "GraphError",
    "GraphProblem",
    "GraphRun",
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
    "node_nursery",
    "run",
    "run_graph",
    "serve_metrics",
]


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
