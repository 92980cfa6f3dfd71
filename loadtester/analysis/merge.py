"""Merge the shards of one run, stored in several database files, into one run.

Past one machine, n pods each blast 1/n of the load (`loadtester blast ... --shard i/n
--run-id ID`) into their own database file; `loadtester merge shard-*.db --into all.db` then
makes ONE run of each group, exactly:

- a group is the runs sharing `run_group` (the --run-id; read from the stored config when the
  column is empty): the shards of one run.  Runs without one are left alone and listed with
  the reason (`ignored`), unless by_label=True (`merge --by-label`): then they are grouped by
  their label (runs with neither are still left alone).  A group takes one run per shard (when
  `shard` is set) or else one run per source file: if a file holds several, the latest started
  wins.
- a shard's row keeps the whole run's connections, rate and -n (blast splits them as it runs),
  so shards of one run give the common value; runs grouped by label each ran their own, and
  theirs are added.  Workers are always added.
- counts are added; the latency histograms (latency_hist, service_hist) are merged bucket by
  bucket, so the merged percentiles are those of one histogram of every sample;
  rps = total responses / the longest measured_duration; started_at = the earliest start,
  completed_at = the latest end; status 'completed' only when every part completed (and, with
  i/n shards, every shard is there), else the worst of failed > interrupted > stopped.
- per-second windows and request rows are copied.  Each part's times are shifted to the merged
  run's start (its started_at minus the earliest one): request timestamps by that many µs,
  window seconds by that many whole seconds (rounded), so the merged per-second rows add up
  what every shard did in the same wall-clock second.
- workers are renumbered densely: parts in shard order (then file order), part k's worker w
  becomes offset_k + w with offset_k = the sum of the worker counts of the parts before it
  (a part's worker count: max(its `workers`, highest worker seen + 1)).  Four one-worker pods
  become workers 0..3.  Windows store any worker number; a request row keeps the worker in one
  byte, so past 256 workers in all, request rows say 255 (windows keep the exact number).
- the merged run is written through store.RunWriter (begin with its test_runs columns, request
  rows re-packed into the engine's 24-byte record, windows in submit_window's shape, finish
  with the result columns), so that layout has one writer.  Its uuid is derived from the parts'
  uuids: merging the same parts again finds it and does not add a second copy.

Sources are opened read-only and never changed; the destination may not be one of them.
"""
from __future__ import annotations

import datetime as _dt
import json
import pathlib
import struct
import time
import uuid as _uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from loadtester import _engine, store
from loadtester.analysis import aggregate, report as report_mod
from loadtester.analysis.mergerows import (
    common,
    first_error_messages,
    group_key,
    json_object,
    max_or_none,
    merged_addresses,
    merged_status,
    merged_target_latency,
    merged_targets,
    run_config,
    shard_of,
    shard_text,
    sum_or_none,
)
from loadtester.model import RECORD_FORMAT, RECORD_SIZE, Window
from loadtester.store import queries
from loadtester.store.connection import same_file, table_columns
from loadtester.units import iso_utc, parse_iso_utc

if TYPE_CHECKING:
    from _typeshed import StrPath

RECORD = struct.Struct(RECORD_FORMAT)     # start_us, latency_us, wait_us, bytes, status, error, worker
CHUNK_RECORDS = 16384                            # records per submitted batch (384 KiB)
MAX_PENDING_BATCHES = 64                         # record batches queued ahead of the writer
MAX_PENDING_WINDOWS = 256
QUEUE_BATCHES = 1024                             # > the two bounds above: nothing is ever dropped
STALL_SECONDS = 120.0
_MERGE_NAMESPACE = _uuid.UUID("6c6f6164-7465-7374-6572-2d6d65726765")   # 'loadtester-merge'


class MergeError(store.StoreError):
    """A merge that cannot be done; the message is one line."""


# --------------------------------------------------------------------------- reading sources

class _Source:
    def __init__(self, index: int, path: pathlib.Path) -> None:
        self.index = index
        self.path = path
        self.conn = store.open_database(path, readonly=True, create=False)

    def runs(self) -> list[dict[str, Any]]:
        return store.list_runs(self.conn, limit=1 << 62)

    def close(self) -> None:
        self.conn.close()


_Part = tuple[_Source, dict[str, Any]]       # a run of a group: its source and its test_runs row


# --------------------------------------------------------------------------- planning

def _select_parts(candidates: list[_Part]) -> tuple[list[_Part], list[str]]:
    """One run per slot (its shard, or else its source file): the latest started wins."""
    slots: dict[tuple[str, tuple[int, int]] | tuple[str, int], list[_Part]] = {}
    notes = []
    for source, row in candidates:
        shard = shard_of(row)
        slot = ("shard", shard) if shard else ("file", source.index)
        slots.setdefault(slot, []).append((source, row))
    chosen = []
    for slot, items in slots.items():
        items.sort(key=lambda sr: ((sr[1].get("started_at") or ""), sr[0].index, sr[1]["id"]))
        chosen.append(items[-1])
        for source, row in items[:-1]:
            where = f"shard {shard_text(row)}" if slot[0] == "shard" else str(source.path)
            notes.append(f"run {row['id']} in {source.path} left out: a later run of {where} "
                         f"is in the group (run {items[-1][1]['id']} in {items[-1][0].path})")
    chosen.sort(key=lambda sr: ((shard_of(sr[1]) or (1 << 30, 0))[0], sr[0].index,
                                sr[1].get("started_at") or "", sr[1]["id"]))
    return chosen, notes


def _plan(sources: list[_Source], group: str | None, by_label: bool
          ) -> tuple[dict[tuple[str, str], list[_Part]], list[dict[str, Any]]]:
    """({group key: [(source, row), ...]}: every candidate run of each group,
    [runs left out: {db, run_id, uuid, label, reason}])."""
    groups: dict[tuple[str, str], list[_Part]] = {}
    loose: list[_Part] = []
    for source in sources:
        for row in source.runs():
            key = group_key(row, by_label)
            if key is None:
                loose.append((source, row))
                continue
            if group is not None and key[1] != group:
                continue
            groups.setdefault(key, []).append((source, row))
    if group is not None:
        kinds = {k[0] for k in groups}
        if "run_group" in kinds and "label" in kinds:
            # --group names a run group: runs that merely carry the same label are not in it
            groups = {k: v for k, v in groups.items() if k[0] == "run_group"}
    labels: dict[str, int] = {}
    for _, row in loose:
        if row.get("label"):
            labels[row["label"]] = labels.get(row["label"], 0) + 1
    ignored = []
    for source, row in loose:
        label = row.get("label")
        if group is not None and label != group:
            continue
        if not label:
            reason = "not a shard of a run (no --run-id) and no label: nothing to merge it with"
        elif labels[label] > 1:
            reason = (f"not a shard of a run (no --run-id); {labels[label] - 1} other run(s) share its "
                      f"label {label!r}: --by-label merges runs by their label")
        else:
            reason = f"not a shard of a run (no --run-id), and no other run has its label {label!r}"
        ignored.append({"db": str(source.path), "run_id": row["id"], "uuid": row["uuid"],
                        "label": label, "reason": reason})
    return groups, ignored


# --------------------------------------------------------------------------- one part's summary

def _part_summary(source: _Source, row: dict[str, Any]) -> dict[str, Any]:
    """Counters and histograms of one part: from its summary columns, or (a run that was
    interrupted before writing them) rebuilt from its stored windows."""
    if row.get("latency_hist") is not None:
        return {"counters": aggregate.counters_from_row(row),
                "latency": aggregate.hist_from_blob(row["latency_hist"]),
                "service": aggregate.hist_from_blob(row.get("service_hist")),
                "duration_s": row.get("measured_duration") or 0.0, "rebuilt": False}
    windows = store.run_windows(source.conn, row["id"])
    totals = aggregate.total(windows)
    counters, latency, service = totals.counters, totals.latency, totals.service
    last_second = max(totals.seconds, default=-1)
    duration = row.get("measured_duration") or float(last_second + 1)
    return {"counters": counters, "latency": latency, "service": service, "duration_s": duration,
            "rebuilt": True}


# --------------------------------------------------------------------------- writing

class _Pump:
    """Feeds a RunWriter without ever overrunning its queue (whose overflow would drop rows)."""

    def __init__(self, writer: store.RunWriter) -> None:
        self.writer = writer
        self.records = 0
        self.windows = 0

    def _done(self) -> tuple[int, int]:
        w = self.writer
        return (w.rows_written + w.dropped_records,
                w.windows_written + w.duplicate_windows + w.dropped_windows)

    def _wait(self, max_records: int, max_windows: int) -> None:
        last, since = None, time.monotonic()
        while True:
            done = self._done()
            if self.records - done[0] <= max_records and self.windows - done[1] <= max_windows:
                return
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since > STALL_SECONDS:
                raise MergeError(f"the writer of {self.writer.path} made no progress for "
                                 f"{STALL_SECONDS:.0f} s ({self.writer.last_error or 'no error given'})")
            time.sleep(0.002)

    def window(self, window: Window) -> None:
        self._wait(CHUNK_RECORDS * MAX_PENDING_BATCHES, MAX_PENDING_WINDOWS - 1)
        self.writer.submit_window(window)
        self.windows += 1

    def record_batch(self, blob: bytes) -> None:
        self._wait(CHUNK_RECORDS * (MAX_PENDING_BATCHES - 1), MAX_PENDING_WINDOWS)
        self.writer.submit_records(blob)
        self.records += len(blob) // RECORD_SIZE

    def drain(self) -> None:
        self._wait(0, 0)


def _copy_requests(source: _Source, run_id: int, pump: _Pump, *, shift_us: int,
                   worker_offset: int) -> tuple[int, int]:
    """Copy a part's request rows, re-packed as engine records; (rows, highest source worker)."""
    pack = RECORD.pack
    rows = 0
    top_worker = -1
    chunk: list[bytes] = []
    for timestamp, latency, wait_us, nbytes, code in queries.iter_request_codes(source.conn, run_id):
        worker = (code >> 24) & 0xFF
        if worker > top_worker:
            top_worker = worker
        chunk.append(pack(timestamp + shift_us, latency, wait_us, nbytes, code & 0xFFFF,
                          (code >> 16) & 0xFF, min(worker + worker_offset, 255)))
        if len(chunk) == CHUNK_RECORDS:
            pump.record_batch(b"".join(chunk))
            rows += len(chunk)
            chunk = []
    if chunk:
        pump.record_batch(b"".join(chunk))
        rows += len(chunk)
    return rows, top_worker


def _merge_group(key: tuple[str, str], parts: list[_Part], notes: list[str], into: pathlib.Path,
                 dest_columns: set[str]) -> dict[str, Any]:
    kind, name = key
    rows = [row for _, row in parts]
    modes = {row.get("mode") or "closed" for row in rows}
    if len(modes) > 1:
        raise MergeError(f"group {name!r} mixes load models ({', '.join(sorted(modes))}); "
                         "its runs cannot be merged into one")
    running = [(s, r) for s, r in parts if r.get("status") == "running"]
    if running:
        s, r = running[0]
        raise MergeError(f"run {r['id']} in {s.path} (group {name!r}) is still running; wait for it "
                         f"to finish (if its process died, `loadtester db migrate --db {s.path}` "
                         "marks it interrupted)")

    # Which uuid: the same parts always give the same merged run.
    merged_uuid = str(_uuid.uuid5(_MERGE_NAMESPACE, ",".join(sorted(r["uuid"] for r in rows))))
    if into.exists():
        conn = store.open_database(into, readonly=True, create=False)
        try:
            existing = store.find_run(conn, merged_uuid)
        finally:
            conn.close()
        if existing is not None:
            return {"group": name, "group_kind": kind, "run_id": existing["id"], "uuid": merged_uuid,
                    "status": existing["status"], "already_merged": True,
                    "requests": existing.get("total_requests"), "rps": existing.get("rps"),
                    "p50": existing.get("p50"), "p99": existing.get("p99"),
                    "parts": [_part_info(s, r) for s, r in parts], "notes": notes}

    # Times.
    parsed = [parse_iso_utc(r.get("started_at")) for r in rows]
    starts = [t for t in parsed if t is not None]
    if len(starts) < len(parsed):
        raise MergeError(f"group {name!r}: a run has no readable started_at")
    t0 = min(starts)
    ends = [t for t in (parse_iso_utc(r.get("completed_at")) for r in rows) if t is not None]
    if ends and len(ends) == len(rows) and max(starts) > min(ends):
        gap = (max(starts) - min(ends)).total_seconds()
        notes.append(f"the parts did not all run at the same time (one started {gap:.1f} s after "
                     "another had ended): the merged req/s adds up load that did not overlap")

    # Totals and exact histograms.
    summaries = [_part_summary(s, r) for s, r in parts]
    counters, latency, service = _engine.Counters(), _engine.Histogram(), _engine.Histogram()
    for summary in summaries:
        counters.merge(summary["counters"])
        latency.merge(summary["latency"])
        service.merge(summary["service"])
    duration_s = max(s["duration_s"] for s in summaries)
    # The generator's health (schema 3's `generator` column, when the parts have it): the
    # worst lags, the busy and worker seconds added up.
    generators = [json_object(r.get("generator")) for r in rows]
    max_wait_us = round(max((g.get("max_schedule_lag_ms") or 0) for g in generators) * 1000)
    if max_wait_us:
        counters.merge(aggregate.counters_from_row({}, max_wait_us=max_wait_us))
    target_latency = merged_target_latency(rows)
    generator_args: dict[str, Any] = {          # summarize()'s keyword arguments
        "max_loop_lag_us": round(max((g.get("max_loop_lag_ms") or 0) for g in generators) * 1000),
        "busy_seconds": sum(g.get("busy_seconds") or 0 for g in generators),
        "worker_seconds": sum(g.get("worker_seconds") or 0 for g in generators),
        "error_messages": first_error_messages(rows),
        "targets": merged_targets(rows, target_latency),
    }
    for (s, r), summary in zip(parts, summaries):
        if summary["rebuilt"]:
            notes.append(f"run {r['id']} in {s.path} had no summary ({r.get('status')}); "
                         "its totals were rebuilt from its per-second windows")

    # Status.
    shards = [shard_of(r) for r in rows]
    status, stop_reason = merged_status(rows, shards, notes)

    # The run's own columns.
    # A shard's row keeps the whole run's connections, rate and -n (blast splits them over
    # shards x workers as it runs): shards of one run give the common value.  Runs that are
    # not shards (grouped by label) each ran their own: theirs add up.
    sharded = all(sh is not None for sh in shards)
    whole = max_or_none if sharded else sum_or_none
    config = dict(run_config(rows[0]))
    workers_declared = [r.get("workers") or 1 for r in rows]
    config.update({
        "connections": whole(r.get("total_users") or 0 for r in rows),
        "rate": whole(r.get("rate") for r in rows) if rows[0].get("mode") == "rate" else config.get("rate"),
        "requests": whole(r.get("requests_limit") for r in rows) if all(
            r.get("requests_limit") is not None for r in rows) else None,
        "workers": sum(workers_declared),
        "label": common([r.get("label") for r in rows], rows[0].get("label") or ""),
        "shard": None,
        "run_id": name if kind == "run_group" else config.get("run_id"),
        "merged_from": [_part_info(s, r) for s, r in parts],
    })
    config.setdefault("url", rows[0].get("url"))
    config.setdefault("method", rows[0].get("method") or "GET")
    config.setdefault("mode", rows[0].get("mode") or "closed")
    if len({r.get("url") for r in rows}) > 1:
        notes.append("the parts hit different URLs; the merged run shows the first one")
    has_requests = any(queries.has_rows(s.conn, "request_batches", r["id"]) for s, r in parts)
    has_windows = any(queries.has_rows(s.conn, "metric_windows", r["id"]) for s, r in parts)
    store_mode = "requests" if has_requests else ("windows" if has_windows else "none")
    run: dict[str, Any] = {
        "uuid": merged_uuid, "started_at": iso_utc(t0),
        "host": common([r.get("host") for r in rows], rows[0].get("host")),
        "mask_host": max(int(r.get("mask_host") or 0) for r in rows),
        "total_users": config["connections"],
        "ramp_up_sec": max_or_none(r.get("ramp_up_sec") for r in rows),
        "duration": max_or_none(r.get("duration") for r in rows),
        "method": rows[0].get("method"), "body": rows[0].get("body"), "headers": rows[0].get("headers"),
        "url": rows[0].get("url"), "mode": rows[0].get("mode"),
        "rate": config["rate"] if rows[0].get("mode") == "rate" else rows[0].get("rate"),
        "workers": sum(workers_declared), "requests_limit": config["requests"],
        "label": config["label"] or None,
        "config": json.dumps(config),
        "environment": json.dumps({"merged_from": [json.loads(r.get("environment") or "null")
                                                   for r in rows]}),
    }
    if "run_group" in dest_columns:
        run["run_group"] = name if kind == "run_group" else None
        run["shard"] = None
    elif kind == "run_group":
        notes.append(f"{into} has no run_group column (schema older than 2): the group name is "
                     "kept in the merged run's config only")

    writer = store.RunWriter(into, store_mode=store_mode, queue_batches=QUEUE_BATCHES,
                             writer_nice=0)         # no load generator to make way for
    run_id, _ = writer.begin(run)
    pump = _Pump(writer)
    info = []
    offset = 0
    try:
        for (source, row), declared in zip(parts, workers_declared):
            shift = cast(_dt.datetime, parse_iso_utc(row["started_at"])) - t0     # (read above)
            shift_us = round(shift.total_seconds() * 1e6)
            shift_s = round(shift.total_seconds())
            top = -1
            windows = 0
            if store_mode != "none":
                for window in store.run_windows(source.conn, row["id"]):
                    top = max(top, window["worker"])
                    window = cast(Window, dict(window, worker=window["worker"] + offset,
                                               second=window["second"] + shift_s))
                    pump.window(window)
                    windows += 1
            request_rows = 0
            if store_mode == "requests":
                request_rows, top_r = _copy_requests(source, row["id"], pump, shift_us=shift_us,
                                                     worker_offset=offset)
                top = max(top, top_r)
            part = _part_info(source, row)
            part.update({"worker_offset": offset, "time_offset_s": round(shift.total_seconds(), 3),
                         "windows": windows, "request_rows": request_rows})
            info.append(part)
            offset += max(declared, top + 1)
        if offset > 256 and store_mode == "requests":
            notes.append(f"{offset} workers in all: request rows of workers past 255 say 255 "
                         "(their windows keep the exact number)")
        pump.drain()
    except BaseException as exc:
        writer.finish({"stop_reason": f"merge failed: {exc}"}, status="failed")
        raise

    # The summary, as `blast` writes it.
    report = report_mod.summarize(
        spec_config=config, counters=counters, latency=latency, service=service,
        duration_s=duration_s, stop_reason=stop_reason, status=status,
        dropped_records=sum(r.get("dropped_records") or 0 for r in rows),
        run_id=run_id, uuid=merged_uuid, db_path=into, started_at=run["started_at"],
        **generator_args)
    addresses = merged_addresses(rows)
    if addresses:
        report["addresses"] = addresses
    variants = store.merge_variant_counts([r.get("variant_counts") for r in rows])
    if variants is not None:
        report["variants"] = store.variants_served(variants[1])
    result = report_mod.result_columns(report, latency=latency, service=service,
                                       duration_s=duration_s, stop_reason=stop_reason,
                                       dropped_records=report["dropped_records"],
                                       target_latency=target_latency if report.get("targets") else None)
    if variants is not None:
        result["variant_counts"] = variants[0]
    if ends:
        result["completed_at"] = iso_utc(max(ends))
    writer.finish(result, status=status)
    if writer.dropped_records or writer.dropped_windows:
        notes.append(f"the store dropped {writer.dropped_records} request rows and "
                     f"{writer.dropped_windows} windows while writing ({writer.last_error})")
    return {"group": name, "group_kind": kind, "run_id": run_id, "uuid": merged_uuid,
            "status": status, "already_merged": False, "requests": report["requests"],
            "attempts": report["attempts"], "rps": report["rps"],
            "p50": report["latency_ms"]["p50"], "p99": report["latency_ms"]["p99"],
            "request_rows": writer.rows_written, "windows": writer.windows_written,
            "dropped_records": writer.dropped_records, "parts": info, "notes": notes}


def _count(source: _Source, table: str, run_id: int) -> int:
    count: int = source.conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE test_run_id = ? LIMIT 1)", (run_id,)).get
    return count


def _part_info(source: _Source, row: dict[str, Any]) -> dict[str, Any]:
    return {"db": str(source.path), "run_id": row["id"], "uuid": row["uuid"],
            "shard": shard_text(row), "status": row.get("status"),
            "requests": row.get("total_requests"), "started_at": row.get("started_at")}


# --------------------------------------------------------------------------- entry points

def merge(sources: Iterable[StrPath], into: StrPath, *, group: str | None = None,
          by_label: bool = False) -> dict[str, Any]:
    """Merge every group found in the source databases (or only `group`) into `into`: the
    shards of each run group, and with by_label, runs that share a label.

    Returns {"into": path, "merged": [one dict per group: run_id, uuid, status, parts, notes,
    already_merged, ...], "skipped": [{group, reason}] (groups that could not be merged),
    "ignored": [{db, run_id, uuid, label, reason}] (runs in no group)}.  MergeError /
    StoreError (one line) when it cannot."""
    paths = [pathlib.Path(p) for p in sources]
    into = pathlib.Path(into)
    if not paths:
        raise MergeError("nothing to merge: give at least one source database")
    for i, p in enumerate(paths):
        if same_file(p, into):
            raise MergeError(f"{into} is one of the sources; merge into a new or another database")
        for q in paths[:i]:
            if same_file(p, q):
                raise MergeError(f"{p} is given twice")
    opened: list[_Source] = []
    try:
        for i, p in enumerate(paths):
            opened.append(_Source(i, p))
        groups, ignored = _plan(opened, group, by_label)
        if group is not None and not groups and not ignored:
            raise MergeError(f"no run with run group or label {group!r} in "
                             f"{', '.join(str(p) for p in paths)}")
        merged: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        dest_columns: set[str] | None = None
        for key in sorted(groups, key=lambda k: (min(r.get("started_at") or "" for _, r in groups[k]), k)):
            parts, notes = _select_parts(groups[key])
            # list_runs leaves the histogram blobs out: the chosen parts' whole rows
            parts = [(s, cast("dict[str, Any]", store.find_run(s.conn, row["id"]))) for s, row in parts]
            if dest_columns is None:
                dest_columns = _dest_columns(into)
            try:
                merged.append(_merge_group(key, parts, notes, into, dest_columns))
            except MergeError as exc:
                if group is not None:
                    raise
                skipped.append({"group": key[1], "group_kind": key[0], "reason": str(exc)})
        return {"into": str(into), "merged": merged, "skipped": skipped, "ignored": ignored}
    finally:
        for source in opened:
            source.close()


def _dest_columns(into: pathlib.Path) -> set[str]:
    conn = store.open_database(into)                  # creates / migrates the destination
    try:
        return set(table_columns(conn, "test_runs"))
    finally:
        conn.close()


def merge_databases(sources: Iterable[StrPath], into: StrPath, *,
                    group: str | None = None, by_label: bool = False) -> list[int]:
    """Merge the runs of each group found in `sources` (or only `group`) into one run each in
    `into`; returns the merged runs' ids (a group merged before keeps its earlier run)."""
    return [m["run_id"] for m in merge(sources, into, group=group, by_label=by_label)["merged"]]
