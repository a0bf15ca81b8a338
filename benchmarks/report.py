"""From the groups' raw outputs to the figures of docs/benchmarks.md, the targets, and a table.

``summarise`` is where the JSON keys are fixed: ``figures.<name>.<field>``, ``peers.<name>`` and
``targets[]`` (``figure``, ``field``, ``target``, ``value``, ``met``). A figure whose group failed
holds ``{"error": ...}`` and its targets have ``met: null``.
"""

from __future__ import annotations

from typing import Any

PEERS = ("dbos", "wrangler")
#: the dev loop's commands and their targets in seconds (whole processes, median)
DEVLOOP_TARGETS_S = {"help": 0.12, "check": 0.25, "run": 0.4, "dev": 0.6}
DEVLOOP_LABELS = {"help": "dynwf --help", "check": "dynwf check (template)",
                  "run": "dynwf run --tenant acme (template)",
                  "dev": "dynwf dev: start to first response"}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def summarise(raw: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    compare = raw.get("compare", {})
    dynwf = compare.get("dynwf", {}) if isinstance(compare, dict) else {}
    cold = raw.get("cold_start", {})
    idle = raw.get("idle", {})
    scale = raw.get("scale", {})
    memory = raw.get("memory", {})
    engine = raw.get("engine", {})
    flood = raw.get("flood", {})

    def failed(group: dict[str, Any]) -> dict[str, Any] | None:
        if not group:
            return {"error": "not run"}
        if "error" in group:
            return {"error": group["error"]}
        return None

    figures: dict[str, Any] = {}
    figures["step_overhead"] = failed(compare) or {
        "steps_per_s": dynwf.get("steps_per_s"),
        "rounds": _get(dynwf, "rounds", "steps"),
        "steps_per_s_concurrent": dynwf.get("steps_per_s_concurrent"),
        "engine_only_steps_per_s": engine.get("engine.steps_per_second.sequential"),
        "engine_only_steps_per_s_concurrent": engine.get("engine.steps_per_second.concurrent"),
    }
    figures["latency"] = failed(compare) or dict(dynwf.get("latency_3_steps") or {})
    figures["throughput"] = failed(compare) or {
        "workflows_per_s": dynwf.get("workflows_per_s"),
        "rounds": _get(dynwf, "rounds", "throughput"),
        **(dynwf.get("throughput_setup") or {}),
        "live_isolates": dynwf.get("throughput_live_isolates"),
    }
    figures["cold_start"] = failed(cold) or {
        "median_ms": _get(cold, "cold_boot", "median_ms"),
        "p99_ms": _get(cold, "cold_boot", "p99_ms"),
        "samples": _get(cold, "cold_boot", "samples"),
        "gap_ms": cold.get("gap_ms"),
        "burst_median_ms": _get(cold, "cold_boot_burst", "median_ms"),
        "burst_p99_ms": _get(cold, "cold_boot_burst", "p99_ms"),
        "in_isolate_load_ms": cold.get("in_isolate_load_ms"),
        "in_isolate_phases_ms": cold.get("in_isolate_phases_ms"),
        "warm_call_us": cold.get("warm_call_us_median"),
    }
    figures["idle_tenants"] = failed(idle) or {
        "tenants": idle.get("tenants"),
        "quick_mode_fewer_tenants": bool(idle.get("quick_mode_tenants")),
        "host_rss_mb": _get(idle, "asleep", "host_rss_mb"),
        "live_isolates": _get(idle, "asleep", "live_isolates"),
        "max_live_isolates": idle.get("max_live_isolates"),
        "pool_size": idle.get("pool_size"),
        "engine_concurrency": idle.get("engine_concurrency"),
        "isolates_pss_mb": _get(idle, "asleep", "isolates_pss_mb"),
        "database_mb": _get(idle, "asleep", "database_mb"),
        "all_asleep_s": idle.get("all_asleep_s"),
        "wake_all_complete_s": idle.get("wake_all_complete_s"),
        "wake_boots": idle.get("wake_boots"),
        "errored": idle.get("errored"),
        "pool_bound_default_concurrency": idle.get("pool_bound_default_concurrency"),
    }
    figures["scale"] = failed(scale) or {
        "waiting_instances": scale.get("waiting_instances"),
        "wake_lag_p50_ms": _get(scale, "wake_lag", "median_ms"),
        "wake_lag_p99_ms": _get(scale, "wake_lag", "p99_ms"),
        "wake_lag_max_ms": scale.get("wake_lag_max_ms"),
        "events_sent": scale.get("events_sent"),
        "event_rate_per_s": scale.get("event_rate_per_s"),
        "setup_s": scale.get("setup_s"),
        "host_rss_mb": scale.get("host_rss_mb_waiting"),
        "database_mb": scale.get("database_mb_waiting"),
    }
    series = memory.get("series") or []
    half = _second_half_growth(series)
    figures["memory"] = failed(memory) or {
        "host_rss_mb_after_1000": memory.get("host_rss_mb_after_1000"),
        "host_rss_mb_after_10000": memory.get("host_rss_mb_after_10000"),
        "growth_kb_per_instance": memory.get("growth_kb_per_instance"),
        "growth_kb_per_instance_second_half": half,
        "series": series,
        "database_mb": memory.get("database_mb"),
    }

    phases = flood.get("phases") or []
    figures["flood"] = failed(flood) or {
        "neighbour_p99_ms_quiet": flood.get("quiet_p99_ms"),
        "neighbour_p99_ms_worst": flood.get("worst_p99_ms"),
        "worst_flood": flood.get("worst_flood"),
        "neighbour_max_ms_worst": max((p.get("max_ms") or 0 for p in phases), default=None),
        "host_rss_mb_quiet": flood.get("host_rss_mb_quiet"),
        "host_rss_mb_peak": flood.get("host_rss_mb_peak"),
        "host_rss_growth_mb": flood.get("host_rss_growth_mb"),
        "seconds_per_phase": flood.get("seconds_per_phase"),
        "phases": {p.get("flood"): {k: p.get(k) for k in ("p99_ms", "max_ms", "host_rss_mb_peak",
                                                          "kills", "held_back_s")}
                   for p in phases},
        "frame_costs_ms": flood.get("frame_costs_ms"),
    }

    devloop = raw.get("devloop", {})
    figures["devloop"] = failed(devloop) or {
        name: figure for name, figure in (devloop.get("figures") or {}).items()}

    peers: dict[str, Any] = {}
    for name in PEERS:
        entry = compare.get(name) if isinstance(compare, dict) else None
        if entry is None:
            peers[name] = {"skipped": (failed(compare) or {}).get("error", "not requested")}
            continue
        if entry.get("skipped"):
            peers[name] = {"skipped": entry["skipped"]}
            continue
        peers[name] = {
            "version": entry.get("version"),
            "node": entry.get("node"),
            "install_s": entry.get("install_s"),
            "start_s": entry.get("start_s"),
            "steps_per_s": entry.get("steps_per_s"),
            "latency_median_ms": _get(entry, "latency_3_steps", "median_ms"),
            "latency_p99_ms": _get(entry, "latency_3_steps", "p99_ms"),
            "workflows_per_s": entry.get("workflows_per_s"),
            "ratios": entry.get("ratios"),
            "sizes": entry.get("sizes"),
            "rss_mb_after": entry.get("rss_mb_after"),
            "failed": entry.get("failed"),
        }

    targets = [
        _target("step_overhead", "steps_per_s", ">=", 4000, figures),
        _target("step_overhead", "steps_per_s_concurrent", ">=", 12000, figures),
        _target("latency", "median_ms", "<=", 1.2, figures),
        _target("latency", "p99_ms", "<=", 4.0, figures),
        _target("throughput", "workflows_per_s", ">=", 2500, figures),
        _target("cold_start", "median_ms", "<=", 2.5, figures),
        _target("cold_start", "p99_ms", "<=", 6.0, figures),
        _target("idle_tenants", "host_rss_mb", "<=", 150, figures),
        _target("idle_tenants", "max_live_isolates", "<=",
                _get(figures, "idle_tenants", "pool_size") or 64, figures),
        _target("scale", "wake_lag_p99_ms", "<=", 100, figures),
        _target("memory", "growth_kb_per_instance", "<=", 1.0, figures),
        _target("memory", "growth_kb_per_instance_second_half", "<=", 1.0, figures),
        _target("flood", "neighbour_p99_ms_worst", "<=", 50, figures),
        _target("flood", "host_rss_growth_mb", "<=", 100, figures),
        *[_target("devloop", f"{name}.median_s", "<=", limit, figures)
          for name, limit in DEVLOOP_TARGETS_S.items()],
    ]
    if quick and "tenants" in figures["idle_tenants"]:
        for t in targets:
            if t["figure"] == "idle_tenants":
                t["note"] = f"quick mode: {_get(figures, 'idle_tenants', 'tenants')} tenants, not 10,000"
    return {"figures": figures, "peers": peers, "targets": targets}


def _second_half_growth(series: list[list[float]]) -> float | None:
    """KiB per instance between the middle reading and the last (past the allocator's warm-up)."""
    if len(series) < 4:
        return None
    middle, last = series[len(series) // 2 - 1], series[-1]
    if last[0] == middle[0]:
        return None
    return round((last[1] - middle[1]) * 1024 / (last[0] - middle[0]), 3)


def _target(figure: str, field: str, op: str, target: float, figures: dict[str, Any]) -> dict:
    value = _get(figures, figure, *field.split("."))
    met = None
    if isinstance(value, (int, float)):
        met = value >= target if op == ">=" else value <= target
    return {"figure": figure, "field": field, "target": f"{op} {target}", "value": value, "met": met}


# ---- the table ---------------------------------------------------------------------------------

def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def table(results: dict[str, Any]) -> str:
    f = results["figures"]
    p = results["peers"]
    rows: list[tuple[str, str, str]] = []

    def row(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    def err(name: str) -> bool:
        if "error" in f.get(name, {}):
            error = f[name]["error"]
            row(name, "not run" if error == "not run" else "error",
                "" if error == "not run" else error)
            return True
        return False

    if not err("step_overhead"):
        s = f["step_overhead"]
        row("1 step overhead (100-step, warm isolate)", _fmt(s["steps_per_s"], " steps/s"),
            f"one instance at a time; {_fmt(s['steps_per_s_concurrent'])}/s with 100 in flight; "
            f"engine alone {_fmt(s['engine_only_steps_per_s'])}/s")
    if not err("latency"):
        s = f["latency"]
        row("2 latency create->complete (3 steps)",
            f"{_fmt(s.get('median_ms'))} / {_fmt(s.get('p90_ms'))} / {_fmt(s.get('p99_ms'))} ms",
            f"median / p90 / p99, {s.get('samples')} samples, warm isolate")
    if not err("throughput"):
        s = f["throughput"]
        row("3 throughput (3-step dynamic workflows)", _fmt(s["workflows_per_s"], " /s"),
            f"{_fmt(s.get('instances_per_round'))} instances over {s.get('tenants')} tenants, "
            f"pool {s.get('pool_size')}, {s.get('live_isolates')} live isolates")
    if not err("cold_start"):
        s = f["cold_start"]
        row("4 cold start (isolate boot)", f"{_fmt(s['median_ms'])} / {_fmt(s['p99_ms'])} ms",
            f"median / p99, {s['samples']} boots {s['gap_ms']} ms apart; back to back "
            f"{_fmt(s['burst_median_ms'])} / {_fmt(s['burst_p99_ms'])} ms; warm call "
            f"{_fmt(s['warm_call_us'])} us")
    if not err("idle_tenants"):
        s = f["idle_tenants"]
        quick = " (quick mode: fewer tenants)" if s.get("quick_mode_fewer_tenants") else ""
        row(f"5 idle tenants: {_fmt(s['tenants'])} asleep{quick}", _fmt(s["host_rss_mb"], " MB RSS"),
            f"host only; live isolates {s['live_isolates']} (max {s['max_live_isolates']}, pool "
            f"{s['pool_size']}, engine concurrency {s['engine_concurrency']}); isolates "
            f"{_fmt(s['isolates_pss_mb'])} MB PSS; database {_fmt(s['database_mb'])} MB")
        row("  ... clock jumps past the sleeps", _fmt(s["wake_all_complete_s"], " s"),
            f"until all complete ({_fmt(s['wake_boots'])} isolate boots, {s['errored']} errored)")
        bound = s.get("pool_bound_default_concurrency") or {}
        if bound:
            row("  ... pool bound at default concurrency", f"{bound.get('max_live_isolates')} live",
                f"{bound.get('tenants')} tenants starting at once, pool {bound.get('pool_size')}, "
                f"engine concurrency {bound.get('engine_concurrency')}, {bound.get('errored')} errored")
    if not err("scale"):
        s = f["scale"]
        row(f"6 scale: {_fmt(s['waiting_instances'])} waiting for an event",
            f"{_fmt(s['wake_lag_p50_ms'])} / {_fmt(s['wake_lag_p99_ms'])} ms",
            f"wake-up lag p50 / p99 at {_fmt(s['event_rate_per_s'])} events/s "
            f"({_fmt(s['events_sent'])} events); db {_fmt(s['database_mb'])} MB, "
            f"RSS {_fmt(s['host_rss_mb'])} MB; setup {_fmt(s['setup_s'])} s")
    if not err("memory"):
        s = f["memory"]
        row("7 memory over time (host RSS)",
            f"{_fmt(s['host_rss_mb_after_1000'])} -> {_fmt(s['host_rss_mb_after_10000'])} MB",
            f"after 1,000 -> 10,000 completed: {_fmt(s['growth_kb_per_instance'])} KiB/instance; "
            f"second half {_fmt(s['growth_kb_per_instance_second_half'])} KiB/instance")
    for name in PEERS:
        entry = p.get(name, {})
        if entry.get("skipped"):
            row(f"8 peer {name}", "skipped", entry["skipped"])
            continue
        ratios = entry.get("ratios") or {}
        row(f"8 peer {name} {entry.get('version')}: steps/s", _fmt(entry.get("steps_per_s")),
            f"dynwf/{name} = {_fmt(ratios.get('steps'))}x (higher: dynwf faster)")
        row(f"  {name}: latency median", _fmt(entry.get("latency_median_ms"), " ms"),
            f"dynwf/{name} = {_fmt(ratios.get('latency'))}x (lower: dynwf faster)")
        row(f"  {name}: workflows/s", _fmt(entry.get("workflows_per_s")),
            f"dynwf/{name} = {_fmt(ratios.get('throughput'))}x (higher: dynwf faster)")
        if entry.get("rss_mb_after") is not None:
            row(f"  {name}: memory after the rounds", _fmt(entry["rss_mb_after"], " MB RSS"),
                "the peer's processes" + (" (node and workerd)" if name == "wrangler" else ""))
        if entry.get("failed"):
            row(f"  {name}: failed", "", entry["failed"])

    if not err("flood"):
        s = f["flood"]
        row("9 hostile flood: neighbour p99",
            f"{_fmt(s['neighbour_p99_ms_quiet'])} -> {_fmt(s['neighbour_p99_ms_worst'])} ms",
            f"quiet -> worst flood ({s['worst_flood']}); worst single wait "
            f"{_fmt(s['neighbour_max_ms_worst'])} ms; {_fmt(s['seconds_per_phase'])} s a phase")
        row("  ... host RSS under flood",
            f"{_fmt(s['host_rss_mb_quiet'])} -> {_fmt(s['host_rss_mb_peak'])} MB",
            "peak over every phase: oversized, dense, text, costliest, logs, step logs, all")
    if not err("devloop"):
        for name, limit in DEVLOOP_TARGETS_S.items():
            s = f["devloop"].get(name)
            if s is None:
                continue
            row(f"10 dev loop: {DEVLOOP_LABELS[name]}", _fmt(s["median_s"], " s"),
                f"target <= {limit} s; median of {s['runs']} processes (min {_fmt(s['min_s'])}, "
                f"max {_fmt(s['max_s'])}); cpu {_fmt(s['cpu_median_s'])} s")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{label:<{width}}  {value:>{vwidth}}  {note}".rstrip() for label, value, note in rows]
    lines.append("")
    lines.append("targets:")
    for t in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        note = f"  ({t['note']})" if t.get("note") else ""
        lines.append(f"  {t['figure']}.{t['field']} {t['target']}: {_fmt(t['value'])} -> {verdict}{note}")
    m = results.get("machine", {})
    lines.append("")
    lines.append(f"machine: {m.get('cpus')} cpus ({m.get('cpu')}), {m.get('memory_gib')} GiB, "
                 f"Python {m.get('python')}, SQLite {m.get('sqlite')}; load average "
                 f"{m.get('load_average_start')} -> {m.get('load_average_end')}; "
                 f"{results.get('mode')} run in {results.get('elapsed_s')} s")
    return "\n".join(lines)
