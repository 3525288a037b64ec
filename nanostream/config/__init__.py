"""Pipelines described in YAML: loading, checking, and the JSON Schema of the format."""

from ._converter import NodeConfig
from ._errors import ConfigError, ConfigErrors
from ._loader import (
    ENTRY_POINT_GROUP,
    PipelineConfig,
    check_pipeline,
    check_text,
    load_pipeline,
    load_text,
    node_class_names,
    resolve_class,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConfigError",
    "ConfigErrors",
    "NodeConfig",
    "PipelineConfig",
    "check_pipeline",
    "check_text",
    "load_pipeline",
    "load_text",
    "node_class_names",
    "resolve_class",
]
