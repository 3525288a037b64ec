"""The built-in nodes, one module per family.

``BUILTIN_NODES`` maps each name a YAML ``class:`` may use to the node's
``module:Class`` path. Modules are imported only when a node is used, so a
pipeline that never touches Kafka never imports kafka-python.
"""

from __future__ import annotations

import importlib

from .basic import BlackHole, ConstantEmitter, PrintStreamProcessor, SequenceEmitter
from .memory import ChannelSink, ChannelSource

BUILTIN_NODES: dict[str, str] = {
    "SequenceEmitter": "nanostream.nodes.basic:SequenceEmitter",
    "ConstantEmitter": "nanostream.nodes.basic:ConstantEmitter",
    "PrintStreamProcessor": "nanostream.nodes.basic:PrintStreamProcessor",
    "BlackHole": "nanostream.nodes.basic:BlackHole",
    "Batcher": "nanostream.nodes.batching:Batcher",
    "WatchdogDirectoryListener": "nanostream.nodes.directory:WatchdogDirectoryListener",
    "FileReader": "nanostream.nodes.files:FileReader",
    "FileWriter": "nanostream.nodes.files:FileWriter",
    "KafkaConsumer": "nanostream.nodes.kafka:KafkaConsumer",
    "KafkaProducer": "nanostream.nodes.kafka:KafkaProducer",
    "Filter": "nanostream.nodes.functions:Filter",
    "Map": "nanostream.nodes.functions:Map",
    "CsvParser": "nanostream.nodes.csvparse:CsvParser",
    "Throttle": "nanostream.nodes.rate:Throttle",
    "Sampler": "nanostream.nodes.sampling:Sampler",
    "WebsocketListener": "nanostream.nodes.websocket:WebsocketListener",
    "WebsocketSender": "nanostream.nodes.websocket:WebsocketSender",
    "StdinReader": "nanostream.nodes.stdio:StdinReader",
    "StdoutWriter": "nanostream.nodes.stdio:StdoutWriter",
    "HttpServer": "nanostream.nodes.http:HttpServer",
    "HttpClient": "nanostream.nodes.http:HttpClient",
    "HttpPoller": "nanostream.nodes.http:HttpPoller",
    "SqlWriter": "nanostream.nodes.sql:SqlWriter",
    "SqlReader": "nanostream.nodes.sql:SqlReader",
    "Window": "nanostream.nodes.window:Window",
    "Join": "nanostream.nodes.join:Join",
    "Lookup": "nanostream.nodes.lookup:Lookup",
    "Dedup": "nanostream.nodes.dedup:Dedup",
}

#: Built-in nodes for programs that embed NanoStream (``run_graph`` in a trio
#: program): their parameters are live objects, such as a trio memory channel,
#: that no configuration file can hold. ``class:`` in YAML refuses them.
EMBEDDING_NODES: dict[str, str] = {
    "ChannelSource": "nanostream.nodes.memory:ChannelSource",
    "ChannelSink": "nanostream.nodes.memory:ChannelSink",
}

#: Other names of built-in nodes, kept for configurations of the original project.
ALIASES: dict[str, str] = {"DirectoryListener": "WatchdogDirectoryListener"}


def load_builtin(name: str) -> type:
    """The built-in node class called ``name`` (or one of its aliases), from
    ``BUILTIN_NODES`` or ``EMBEDDING_NODES``."""
    name = ALIASES.get(name, name)
    module_name, _, class_name = (BUILTIN_NODES.get(name) or EMBEDDING_NODES[name]).partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "ALIASES",
    "BUILTIN_NODES",
    "EMBEDDING_NODES",
    "BlackHole",
    "ChannelSink",
    "ChannelSource",
    "ConstantEmitter",
    "PrintStreamProcessor",
    "SequenceEmitter",
    "load_builtin",
]
