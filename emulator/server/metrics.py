"""``dynwf serve``'s ``GET /metrics``: the Prometheus text format, from ``prometheus-client``.

Two kinds of figures. Those the engine announces as they happen are counted as they happen,
fed by its progress events (``engine/progress.py``) and its hooks: steps committed, workflows
completed, the step latency (an attempt's start to its commit), the database's latency (each
group commit's transaction, ``engine/writes.py``, and each probe query). Those that are a state
are read at scrape time, so they are never stale and cost nothing between scrapes: instances
by status (one ``GROUP BY`` the ``instances_active`` index serves), the isolate pool's size and
boots, lease takeovers, whether isolation is weakened, whether the server drains.

Each server has a registry of its own (never the process-wide default one), so tests and a
process hosting several servers keep their figures apart.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from emulator.engine import progress
from emulator.host import ProjectHost
from emulator.rules import states

__all__ = ["CONTENT_TYPE", "ServeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Step latencies run from a few milliseconds (a computation) to minutes (a slow API).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: A SQLite commit on a local disk takes 0.1-5 ms; a remote database's round trip more.
DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServeMetrics:
    """The figures of one server around ``host``; :meth:`attach` starts feeding them."""

    def __init__(self, host: ProjectHost, *, missing_layers: dict[str, str],
                 is_draining: Callable[[], bool]) -> None:
        self.host = host
        self.registry = CollectorRegistry(auto_describe=True)
        self.steps_committed = Counter(
            "dynwf_steps_committed", "Step attempts that succeeded and were committed.",
            registry=self.registry)
        self.workflows_completed = Counter(
            "dynwf_workflows_completed", "Instances that ended complete.", registry=self.registry)
        self.workflows_errored = Counter(
            "dynwf_workflows_errored", "Instances that ended errored.", registry=self.registry)
        self.step_seconds = Histogram(
            "dynwf_step_duration_seconds", "A step attempt's start to its commit, in seconds.",
            buckets=STEP_BUCKETS, registry=self.registry)
        self.database_seconds = Histogram(
            "dynwf_database_seconds",
            "Database round trips, in seconds: each group commit's transaction, and each probe "
            "query of /readyz.", ["operation"], buckets=DATABASE_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(host, missing_layers, is_draining))
        self._detach: Callable[[], None] | None = None

    def attach(self) -> None:
        """Hear the engine's progress events and group commits."""
        self._detach = self.host.engine.progress.subscribe(self._progress)
        self.host.engine.writes.on_commit = self.database_seconds.labels("group_commit").observe

    def detach(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None
        self.host.engine.writes.on_commit = None

    def probe(self) -> float:
        """Run the database's probe query; its seconds, also observed (raises when it fails)."""
        started = time.perf_counter()
        self.host.engine.store.ping()
        seconds = time.perf_counter() - started
        self.database_seconds.labels("probe").observe(seconds)
        return seconds

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _progress(self, event: progress.Progress) -> None:
        if event.kind == progress.STEP_COMMITTED:
            self.steps_committed.inc()
            duration_ms = event.data.get("duration_ms")
            if isinstance(duration_ms, int) and duration_ms >= 0:
                self.step_seconds.observe(duration_ms / 1000)
        elif event.kind == progress.INSTANCE_STATUS:
            status = event.data.get("status")
            if status == states.COMPLETE:
                self.workflows_completed.inc()
            elif status == states.ERRORED:
                self.workflows_errored.inc()


class _StateCollector(Collector):
    """The figures read at scrape time."""

    def __init__(self, host: ProjectHost, missing_layers: dict[str, str],
                 is_draining: Callable[[], bool]) -> None:
        self.host = host
        self.missing = ",".join(sorted(missing_layers))
        self.is_draining = is_draining

    def describe(self) -> list[Any]:
        return []   # collected only at scrape time: the store must not be read at registration

    def collect(self) -> Iterator[Any]:
        counts = self.host.engine.store.count_by_status()
        instances = GaugeMetricFamily("dynwf_instances", "Instances in the store, by status.",
                                      labels=["status"])
        for status in sorted(states.ALL):
            instances.add_metric([status], counts.get(status, 0))
        yield instances
        pool = self.host.pool
        yield GaugeMetricFamily("dynwf_isolates_live", "Isolates alive in this host's pool.",
                                value=pool.live_count)
        yield GaugeMetricFamily("dynwf_isolates_max", "The pool's bound on isolates.",
                                value=pool.max_isolates)
        yield CounterMetricFamily("dynwf_isolate_boots", "Isolates this host has started.",
                                  value=pool.loads)
        yield GaugeMetricFamily("dynwf_lifetimes_live", "Instances this host runs now.",
                                value=len(self.host.engine.live))
        yield CounterMetricFamily(
            "dynwf_lease_takeovers",
            "Instances this host claimed from another host whose lease had expired.",
            value=self.host.engine.lease_takeovers)
        engine = self.host.engine
        if engine.has_wakeups:   # a store that pushes other hosts' changes (PostgreSQL)
            yield GaugeMetricFamily(
                "dynwf_wakeups_listening",
                "1 while other hosts' changes are pushed to this host (LISTEN); 0 while it "
                "polls for them instead.", value=1 if engine.listening else 0)
            yield CounterMetricFamily(
                "dynwf_wakeups_lost", "Times the connection that hears other hosts' changes "
                "was lost (this host polled until it was back).", value=engine.listen_losses)
            yield CounterMetricFamily(
                "dynwf_wakeups_heard", "Changes to instances heard from other hosts.",
                value=engine.changes_heard)
        weakened = GaugeMetricFamily(
            "dynwf_isolation_weakened",
            "1 when a kernel layer of tenant isolation is missing (--allow-weak-isolation); "
            "the missing layers are the label.", labels=["missing"])
        weakened.add_metric([self.missing], 1 if self.missing else 0)
        yield weakened
        yield GaugeMetricFamily("dynwf_draining", "1 while the server stops gracefully.",
                                value=1 if self.is_draining() else 0)
