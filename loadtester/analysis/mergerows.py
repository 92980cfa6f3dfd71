"""The merged run's columns from its parts' test_runs rows (merge.py): pure functions, no
database.  Which group a run belongs to, its shard, the counts and settings that add up or are
common, the first error messages and the status."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from loadtester import _engine
from loadtester.analysis.aggregate import unpack_histograms
from loadtester.analysis.report import latency_summary_ms

STATUS_RANK = {"completed": 0, "stopped": 1, "interrupted": 2, "failed": 3}


def json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def merged_addresses(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The parts' per-address counts (--resolve HOST:PORT:A,B) added up address by address,
    in the order first seen; None when no part has any."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        entries = json.loads(row.get("addresses") or "null") or []
        for entry in entries if isinstance(entries, list) else []:
            total = merged.setdefault(entry["address"], {"address": entry["address"]})
            for key in ("connections", "requests", "successes", "errors"):
                total[key] = total.get(key, 0) + int(entry.get(key) or 0)
    return list(merged.values()) or None


def merged_target_latency(rows: list[dict[str, Any]]) -> list[_engine.Histogram] | None:
    """The parts' per-target latency histograms (schema 7) merged target by target, when
    every part has them for the same number of targets; None otherwise."""
    merged = None
    for row in rows:
        hists = unpack_histograms(row.get("target_latency"))
        if hists is None or (merged is not None and len(hists) != len(merged)):
            return None
        if merged is None:
            merged = hists
        else:
            for total, part in zip(merged, hists):
                total.merge(part)
    return merged


def merged_targets(rows: list[dict[str, Any]],
                   latency: list[_engine.Histogram] | None = None) -> list[dict[str, Any]] | None:
    """The parts' per-target counts added up, when every part ran the same targets; with
    `latency` (merged_target_latency), each target's latency from its merged histogram (a
    part's stored summary does not merge: without it, latency is left out).  None when the
    parts ran different targets."""
    lists = []
    for row in rows:
        try:
            targets = json.loads(row.get("targets") or "null")
        except (TypeError, ValueError):
            return None
        if not isinstance(targets, list) or not targets:
            return None
        lists.append(targets)
    shapes = {tuple((t.get("method"), t.get("url"), t.get("weight")) for t in ts) for ts in lists}
    if len(shapes) != 1:
        return None
    merged = []
    for parts in zip(*lists):
        entry = {key: value for key, value in parts[0].items() if key != "latency_ms"}
        for key in ("requests", "successes", "errors"):
            entry[key] = sum(int(part.get(key) or 0) for part in parts)
        merged.append(entry)
    if latency is not None and len(latency) == len(merged):
        for entry, hist in zip(merged, latency):
            entry["latency_ms"] = latency_summary_ms(hist)
    return merged


def run_config(row: dict[str, Any]) -> dict[str, Any]:
    return json_object(row.get("config"))


def shard_of(row: dict[str, Any]) -> tuple[int, int] | None:
    """The run's shard as (i, n) with n > 1; None for a run that is not a shard.  From the
    `shard` column, else from the stored config (blast keeps 'shard': 'i/n' there too)."""
    text = row.get("shard") or run_config(row).get("shard")
    if not text:
        return None
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        return None
    return (i, n) if sep and 0 <= i < n and n > 1 else None


def shard_text(row: dict[str, Any]) -> str | None:
    shard = shard_of(row)
    return f"{shard[0]}/{shard[1]}" if shard else None


def group_key(row: dict[str, Any], by_label: bool = True) -> tuple[str, str] | None:
    """('run_group', id), or with by_label ('label', label), or None for a run that belongs to
    no group.  The run group is the `run_group` column, else the config's run_id (--run-id)."""
    run_group = row.get("run_group") or run_config(row).get("run_id")
    if run_group:
        return ("run_group", str(run_group))
    if by_label and row.get("label"):
        return ("label", row["label"])
    return None


def first_error_messages(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each error kind's first message over the parts, in their order."""
    out: dict[str, str] = {}
    for row in rows:
        for kind, message in json_object(row.get("error_messages")).items():
            out.setdefault(kind, message)
    return out


def common(values: Iterable[Any], default: Any = None) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return default
    return values[0] if all(v == values[0] for v in values) else default


def max_or_none(values: Iterable[Any]) -> Any:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def sum_or_none(values: Iterable[Any]) -> Any:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def merged_status(rows: list[dict[str, Any]], shards: list[tuple[int, int] | None],
                  notes: list[str]) -> tuple[str, str | None]:
    """The merged run's status and stop reason: 'completed' only when every part completed
    (and, with i/n shards, every shard is there), else the worst of failed > interrupted >
    stopped; the parts' stop reasons, and how many shards are missing.  Adds to `notes`."""
    statuses = [r.get("status") or "completed" for r in rows]
    status = max(statuses, key=lambda st: STATUS_RANK.get(st, 3))
    missing: list[str] = []
    counts = {sh[1] for sh in shards if sh}
    if len(counts) == 1:
        n = counts.pop()
        have = {sh[0] for sh in shards if sh}
        missing = [f"{i}/{n}" for i in range(n) if i not in have]
        if missing:
            notes.append(f"shard(s) {', '.join(missing)} missing: the merged run is not complete")
            if status == "completed":
                status = "interrupted"
    elif len(counts) > 1:
        notes.append(f"the parts disagree on the number of shards ({sorted(counts)})")
    reasons: list[str] = []
    for r in rows:
        reason = r.get("stop_reason")
        if reason and reason not in reasons:
            reasons.append(reason)
    stop_reason = ", ".join(reasons) if reasons else None
    if missing:
        stop_reason = f"merged {len(rows)} of {len(rows) + len(missing)} shards" + (
            f" ({stop_reason})" if stop_reason else "")
    return status, stop_reason
