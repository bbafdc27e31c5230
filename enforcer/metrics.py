"""Prometheus metrics of the running agent, in the text format.

What an operator graphs and alerts on: events per rule and action (every
event the kernel reported, written or folded into a summary), the kernel's
own decision counters (blocked, audited, allowlisted, lost: read from the
pinned `stats` map at each scrape), delivery counts, reloads and their last
result, the rules in force per mode. Exposed two ways, both opt-in:

- a file for node_exporter's textfile collector (`--metrics-textfile`),
  rewritten atomically (temporary file + rename) every METRICS_EVERY_S;
- an HTTP endpoint (`--metrics-address HOST:PORT`), served by
  prometheus_client from a thread; values are read when scraped.

prometheus_client renders the format; nothing here touches the kernel
itself: the agent passes readers in.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Tuple

from enforcer.mainsignals import helper_threads_block_signals

#: Seconds between rewrites of the textfile (node_exporter reads it when scraped).
METRICS_EVERY_S = 10.0


class MetricsConfigError(ValueError):
    pass


@dataclass
class ReloadCounts:
    """Reloads since the agent started, and how the last one ended."""

    applied: int = 0
    rejected: int = 0
    last_success: Optional[bool] = None
    last_time: float = 0.0  # Unix seconds

    def record(self, success: bool, now: Callable[[], float] = time.time) -> None:
        if success:
            self.applied += 1
        else:
            self.rejected += 1
        self.last_success = success
        self.last_time = now()


@dataclass
class MetricSources:
    """Readers of the agent's live state; each is called at every collection."""

    events_by_rule: Callable[[], Mapping[Tuple[str, str], int]]  # (rule, action) -> events reported
    delivery: Callable[[], Mapping[str, int]]  # Reporter.counts
    kernel: Callable[[], Mapping[str, int]]  # the stats map: blocked, audited, allowlisted, events_lost
    rules_by_mode: Callable[[], Mapping[str, int]]
    info: Callable[[], Mapping[str, str]]  # policy, mode, version, policy digest ...
    reloads: ReloadCounts = field(default_factory=ReloadCounts)


class AgentCollector:
    """A prometheus_client collector over MetricSources."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        up = GaugeMetricFamily("enforcer_up", "1 while the agent runs and its programs are attached")
        up.add_metric([], 1)
        yield up
        info = dict(self.sources.info())
        meta = GaugeMetricFamily("enforcer_info", "the agent's version, policy and mode", labels=sorted(info))
        meta.add_metric([info[k] for k in sorted(info)], 1)
        yield meta
        rules = GaugeMetricFamily("enforcer_rules", "rules in force, by mode", labels=["mode"])
        for mode, count in sorted(self.sources.rules_by_mode().items()):
            rules.add_metric([mode], count)
        yield rules
        events = CounterMetricFamily(
            "enforcer_events", "events the kernel reported, written or counted in a summary",
            labels=["rule", "action"])
        for (rule, action), count in sorted(self.sources.events_by_rule().items()):
            events.add_metric([rule, action], count)
        yield events
        delivery = self.sources.delivery()
        for name, key, text in (
            ("enforcer_events_written", "events", "events written to the sinks"),
            ("enforcer_events_suppressed", "suppressed", "repeats counted in suppressed summaries"),
            ("enforcer_events_lost", "lost", "events the kernel could not queue (ring buffer full)"),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], delivery.get(key, 0))
            yield counter
        kernel = self.sources.kernel()
        decisions = CounterMetricFamily(
            "enforcer_kernel_decisions", "decisions counted in the kernel since the programs were loaded",
            labels=["outcome"])
        for outcome in ("blocked", "audited", "allowlisted"):
            decisions.add_metric([outcome], kernel.get(outcome, 0))
        yield decisions
        sigio = CounterMetricFamily(
            "enforcer_kernel_sigio_refused",
            "signals a file's I/O would have sent the agent (fcntl F_SETOWN aimed at it), refused without an event")
        sigio.add_metric([], kernel.get("sigio_refused", 0))
        yield sigio
        reloads = self.sources.reloads
        reload_counter = CounterMetricFamily("enforcer_reloads", "policy reloads", labels=["result"])
        reload_counter.add_metric(["applied"], reloads.applied)
        reload_counter.add_metric(["rejected"], reloads.rejected)
        yield reload_counter
        if reloads.last_success is not None:
            last = GaugeMetricFamily("enforcer_last_reload_success", "1 if the last reload was applied")
            last.add_metric([], 1 if reloads.last_success else 0)
            yield last
            when = GaugeMetricFamily("enforcer_last_reload_timestamp_seconds", "time of the last reload")
            when.add_metric([], reloads.last_time)
            yield when


def parse_address(text: str) -> Tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT, with a literal IP address (no name lookups in an agent)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise MetricsConfigError(
            f"--metrics-address {text!r}: expected IP:PORT, e.g. 127.0.0.1:9713 or [::1]:9713") from None
    if not sep or not 0 < number < 65536:
        raise MetricsConfigError(f"--metrics-address {text!r}: port must be 1-65535")
    return host, number


class MetricsExporter:
    """The registry, the optional HTTP server and the optional textfile."""

    def __init__(self, sources: MetricSources, textfile: Optional[Path] = None,
                 address: Optional[Tuple[str, int]] = None) -> None:
        try:
            from prometheus_client import CollectorRegistry  # noqa: PLC0415 - only when metrics are asked for
        except ImportError:
            raise MetricsConfigError(
                "metrics need the prometheus_client library (Debian: python3-prometheus-client)") from None

        self.sources = sources
        self.textfile = textfile
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(sources))
        if textfile is not None and not textfile.parent.is_dir():
            raise MetricsConfigError(f"--metrics-textfile {textfile}: directory {textfile.parent} does not exist")
        self._server = None
        if address is not None:
            from prometheus_client import start_http_server  # noqa: PLC0415

            try:
                with helper_threads_block_signals():  # the server's thread must not take SIGHUP
                    started = start_http_server(address[1], addr=address[0], registry=self.registry)
            except OSError as error:
                raise MetricsConfigError(f"--metrics-address {address[0]}:{address[1]}: {error.strerror}") from None
            self._server = started[0] if isinstance(started, tuple) else None

    def render(self) -> bytes:
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry)

    def write_textfile(self) -> None:
        """Atomically replace the textfile (node_exporter must never read half of it)."""
        if self.textfile is None:
            return
        tmp = self.textfile.with_name(f".{self.textfile.name}.tmp")
        tmp.write_bytes(self.render())
        tmp.chmod(0o644)
        tmp.replace(self.textfile)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
