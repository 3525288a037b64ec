"""Watching a pipeline: its shape, Prometheus metrics and health checks, a
live console, logging. ``nanostream run`` wires them around the graph.

Every module here is private; :func:`serve_metrics`, the one part a program
embedding NanoStream needs, is re-exported from :mod:`nanostream`.
"""

from ._console import StatusView, show_live, summary_text
from ._holder import RunHolder
from ._logs import configure_logging
from ._metrics import serve_metrics, serve_observed

__all__ = [
    "RunHolder",
    "StatusView",
    "configure_logging",
    "serve_metrics",
    "serve_observed",
    "show_live",
    "summary_text",
]
