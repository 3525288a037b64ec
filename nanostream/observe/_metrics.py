"""Prometheus metrics, ``/healthz`` and ``/readyz`` over HTTP, served by trio.

The counters already live in each node's :class:`NodeStats`; a custom
collector reads them when Prometheus scrapes, so observing costs the
pipeline nothing between scrapes. The HTTP side is the least that
Prometheus and a Kubernetes probe need: one ``GET`` (or ``HEAD``) per
connection, answered and closed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .._runtime import GraphRun
from ._holder import RunHolder

logger = logging.getLogger("nanostream.metrics")

LABELS = ("pipeline", "node")

#: (metric name, NodeStats attribute, help) of each counter.
COUNTERS = (
    ("nanostream_items_received_total", "received", "Items a node took from its input."),
    ("nanostream_items_emitted_total", "emitted", "Items a node sent on to its children."),
    ("nanostream_items_skipped_total", "skipped", "Items given up on under a skip policy."),
    ("nanostream_retries_total", "retries", "Attempts made again after an error."),
    ("nanostream_errors_total", "errors", "Exceptions raised by the node's own code."),
    (
        "nanostream_items_dead_lettered_total",
        "dead_lettered",
        "Skipped items sent to a dead-letter node.",
    ),
    (
        "nanostream_items_acknowledged_total",
        "acknowledged",
        "Source items acknowledged once everything derived from them was handled.",
    ),
    ("nanostream_busy_seconds_total", "busy_seconds", "Seconds spent in the node's own code."),
)

#: The classic text format, which every Prometheus version reads; the names
#: here need none of the newer format's escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: A request head larger than this is refused; a scrape or probe is far smaller.
MAX_REQUEST_HEAD = 8192

#: How long a client may take to send its request before it is dropped.
REQUEST_TIMEOUT = 10.0


class StatsCollector(Collector):
    """Turns the live :class:`NodeStats` of a run into metric families."""

    def __init__(self, holder: RunHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        run = self.holder.run
        pipeline = self.holder.graph.name
        stats = list(run.stats.items()) if run is not None else []
        for name, attribute, documentation in COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=LABELS)
            for node, node_stats in stats:
                counter.add_metric((pipeline, node), getattr(node_stats, attribute))
            yield counter
        worker_busy = CounterMetricFamily(
            "nanostream_worker_busy_seconds_total",
            "Seconds each worker of a node spent in the node's own code.",
            labels=(*LABELS, "worker"),
        )
        for node, node_stats in stats:
            for worker, spent in enumerate(node_stats.worker_busy_seconds):
                worker_busy.add_metric((pipeline, node, str(worker)), spent)
        yield worker_busy
        depth = GaugeMetricFamily(
            "nanostream_queue_depth", "Batches waiting in a node's input queue.", labels=LABELS
        )
        capacity = GaugeMetricFamily(
            "nanostream_queue_capacity", "Batches a node's input queue can hold.", labels=LABELS
        )
        running = GaugeMetricFamily(
            "nanostream_node_running", "1 while the node is running, else 0.", labels=LABELS
        )
        for node, node_stats in stats:
            depth.add_metric((pipeline, node), node_stats.queued)
            capacity.add_metric((pipeline, node), node_stats.queue_capacity)
            running.add_metric((pipeline, node), int(node_stats.state == "running"))
        yield depth
        yield capacity
        yield running


def readiness(holder: RunHolder) -> tuple[bool, str]:
    """Whether every node is set up and running, and if not, which are not."""
    run = holder.run
    if run is None:
        return False, f"not ready: setting up {len(holder.graph)} nodes"
    if run.stopping:
        return False, "not ready: stopping"
    waiting = [
        f"{node} {stats.state}" for node, stats in run.stats.items() if stats.state != "running"
    ]
    if waiting:
        return False, "not ready: " + ", ".join(waiting)
    return True, f"ready: {len(run.stats)} nodes running"


class _Responder:
    """Answers the three paths for one observed run."""

    def __init__(self, holder: RunHolder) -> None:
        self.holder = holder
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(holder))

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """The status, content type and body for one request."""
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed: use GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        ready, text = readiness(self.holder)
        return (200 if ready else 503), "text/plain", text.encode() + b"\n"

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one request on ``stream``; a client's misbehaviour ends only
        its own connection, never the server."""
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    return
                response = self._answer(head)
                await stream.send_all(response)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _answer(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            status, content_type, body = 400, "text/plain", b"bad request\n"
            method = "GET"
        else:
            method, target, _ = parts
            try:
                status, content_type, body = self.respond(method, target.split("?", 1)[0])
            except Exception:
                logger.exception("answering %s failed", request_line)
                status, content_type, body = 500, "text/plain", b"internal error\n"
        reason = _REASONS[status]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if status == 405:
            lines.append("Allow: GET, HEAD")
        response = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return response if method == "HEAD" else response + body


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request line and headers, or ``None`` if the client gave up or
    sent more than :data:`MAX_REQUEST_HEAD` bytes of them."""
    received = b""
    while b"\r\n\r\n" not in received:
        if len(received) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some()
        if not chunk:
            return None
        received += chunk
    return received


async def serve_observed(
    holder: RunHolder,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for the run in ``holder``.

    Started with ``nursery.start``, it returns the port it listens on (the
    one the system chose when ``port`` is 0) once it accepts connections.
    Raises :class:`OSError` before that if it cannot listen.

    Cancellation: cancelling it closes the listening socket and every open
    connection.
    """
    responder = _Responder(holder)
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(responder.handle, listeners)


async def serve_metrics(
    run: GraphRun,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Prometheus metrics and health checks for ``run`` until cancelled.

    For a program that runs a graph itself::

        run = await nursery.start(nanostream.run_graph, graph)
        await nursery.start(nanostream.serve_metrics, run, 9464)

    ``/metrics`` reads ``run.stats`` at each scrape; ``/healthz`` answers
    200 while the process serves; ``/readyz`` answers 200 while every node
    is running and 503 (naming the nodes that are not) once the run stops.
    ``nursery.start`` returns the port listened on (useful with port 0) and
    raises :class:`OSError` if it cannot listen.

    Cancellation: cancelling it closes the listening socket and every open
    connection; the run itself is not affected.
    """
    holder = RunHolder(run.graph)
    holder.started(run, trio.current_time())
    await serve_observed(holder, port, host=host, task_status=task_status)
