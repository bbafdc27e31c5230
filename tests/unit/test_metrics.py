"""Prometheus metrics: what the collector renders from the agent's sources, the textfile, addresses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from enforcer.metrics import (MetricsConfigError, MetricSources, MetricsExporter, ReloadCounts,
                              parse_address)


def _sources(**over) -> MetricSources:
    values = dict(
        events_by_rule=lambda: {("sysrq-write", "blocked"): 7, ("exec-unusual-dir", "audited"): 2},
        delivery=lambda: {"events": 5, "suppressed": 4, "lost": 1, "let_through_enforce_rule": 0},
        kernel=lambda: {"blocked": 7, "audited": 2, "allowlisted": 3, "events_lost": 1, "sigio_refused": 6},
        rules_by_mode=lambda: {"enforce": 8, "audit": 1},
        info=lambda: {"policy": "/etc/enforcer/policy.toml", "mode": "policy", "version": "0.1.0"},
    )
    values.update(over)
    return MetricSources(**values)


def _samples(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_rendered_metrics_carry_every_count() -> None:
    sources = _sources()
    sources.reloads.record(True, now=lambda: 1700000000.0)
    sources.reloads.record(False, now=lambda: 1700000010.0)
    samples = _samples(MetricsExporter(sources).render().decode())
    assert samples['enforcer_events_total{action="blocked",rule="sysrq-write"}'] == 7
    assert samples['enforcer_events_total{action="audited",rule="exec-unusual-dir"}'] == 2
    assert samples["enforcer_events_written_total"] == 5
    assert samples["enforcer_events_suppressed_total"] == 4
    assert samples["enforcer_events_lost_total"] == 1
    assert samples['enforcer_kernel_decisions_total{outcome="allowlisted"}'] == 3
    assert samples["enforcer_kernel_sigio_refused_total"] == 6
    assert samples['enforcer_reloads_total{result="applied"}'] == 1
    assert samples['enforcer_reloads_total{result="rejected"}'] == 1
    assert samples["enforcer_last_reload_success"] == 0
    assert samples["enforcer_last_reload_timestamp_seconds"] == 1700000010.0
    assert samples['enforcer_rules{mode="enforce"}'] == 8
    assert samples['enforcer_info{mode="policy",policy="/etc/enforcer/policy.toml",version="0.1.0"}'] == 1
    assert samples["enforcer_up"] == 1


def test_values_are_read_at_each_collection() -> None:
    counts = {("r", "blocked"): 1}
    exporter = MetricsExporter(_sources(events_by_rule=lambda: dict(counts)))
    counts[("r", "blocked")] = 9
    assert _samples(exporter.render().decode())['enforcer_events_total{action="blocked",rule="r"}'] == 9


def test_textfile_is_replaced_atomically_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "enforcer.prom"
    exporter = MetricsExporter(_sources(), textfile=path)
    exporter.write_textfile()
    assert "enforcer_up 1.0" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as its own user
    assert [p.name for p in tmp_path.iterdir()] == ["enforcer.prom"]  # no temporary left behind


def test_textfile_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(MetricsConfigError, match="does not exist"):
        MetricsExporter(_sources(), textfile=tmp_path / "no" / "enforcer.prom")


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9713", ("127.0.0.1", 9713)),
    ("[::1]:9713", ("::1", 9713)),
])
def test_addresses(text, expected) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost:9713", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", ":9713"])
def test_bad_addresses_are_refused(text) -> None:
    with pytest.raises(MetricsConfigError, match="--metrics-address"):
        parse_address(text)


def test_reload_counts() -> None:
    counts = ReloadCounts()
    counts.record(True, now=lambda: 5.0)
    assert (counts.applied, counts.rejected, counts.last_success, counts.last_time) == (1, 0, True, 5.0)
