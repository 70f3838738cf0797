"""Per-op breakdown from an ETDump, read with `executorch.devtools.Inspector` (no ETRecord needed).

What the ETDump of one method's runs holds (executorch 1.5.1): an "Execute" block whose events are the
XNNPACK-internal operators (`Fully Connected (NC, F32) GEMM #3`, `is_delegated_op=True`), one
`DELEGATE_CALL` per delegate (the delegate's total), portable kernels as `native_call_<op>.out`, and
`Method::execute` (the whole run). Each event carries one duration per run; we take its median over runs.
Rows are grouped by operator kind (the `#N` instance suffix dropped) so a report lists kinds, not thousands
of instances; the per-instance rows are kept for the CSV.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from ...errors import ProfileError

CONTAINERS = ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL")
OPS_RUNS = 5  # runs recorded in the ETDump for the per-op breakdown (after the warm-up runs)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def read_events(etdump: str | Path) -> list[dict[str, Any]]:
    """Every event of the Execute blocks: name, delegated, per-run ms."""
    from executorch.devtools import Inspector

    path = Path(etdump)
    if not path.is_file() or path.stat().st_size == 0:
        raise ProfileError(f"no ETDump at {path} (was the runner built with the event tracer on?)")
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        try:
            inspector = Inspector(etdump_path=str(path))
        except Exception as exc:  # the Inspector raises bare exceptions on malformed dumps
            raise ProfileError(f"cannot read ETDump {path}: {type(exc).__name__}: {exc}") from None
    rows = []
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            raw = list(event.perf_data.raw) if event.perf_data is not None else []
            if not raw:
                continue
            rows.append({"name": event.name, "delegated": bool(event.is_delegated_op), "runs_ms": raw})
    return rows


def breakdown(rows: list[dict[str, Any]], delegate: str = "XNNPACK") -> dict[str, Any]:
    """Group events by operator kind; `ops` sorted by time, plus the method and delegate-call totals."""
    kinds: dict[str, dict[str, Any]] = {}
    method_runs: list[float] = []
    delegate_ms = 0.0
    for row in rows:
        ms = _median(row["runs_ms"])
        if row["name"] == "Method::execute":
            method_runs = row["runs_ms"]
            continue
        if row["name"] == "DELEGATE_CALL":
            delegate_ms += ms
            continue
        if row["name"] in CONTAINERS:
            continue
        head, sep, tail = row["name"].rpartition(" #")
        kind = head.rstrip() if sep and tail.isdigit() else row["name"]
        if kind.startswith("native_call_"):
            kind = kind.removeprefix("native_call_")
        entry = kinds.setdefault(
            kind,
            {
                "name": kind,
                "ms": 0.0,
                "count": 0,
                "delegated": row["delegated"],
                "unit": delegate if row["delegated"] else "portable (CPU)",
            },
        )
        entry["ms"] += ms
        entry["count"] += 1
    total = sum(k["ms"] for k in kinds.values()) or 1.0
    ops = sorted(kinds.values(), key=lambda k: -k["ms"])
    for k in ops:
        k["ms"] = round(k["ms"], 4)
        k["share"] = round(k["ms"] / total, 4)
    return {
        "ops": ops,
        "method_ms": round(_median(method_runs), 4) if method_runs else None,
        "method_runs_ms": [round(x, 4) for x in method_runs],
        "delegate_call_ms": round(delegate_ms, 4),
        "delegated_share": round(sum(k["ms"] for k in ops if k["delegated"]) / total, 4),
        "events": [
            {"name": r["name"], "delegated": r["delegated"], "ms": round(_median(r["runs_ms"]), 4)} for r in rows
        ],
    }


def ops_from_etdump(etdump: str | Path, delegate: str = "XNNPACK") -> dict[str, Any]:
    return breakdown(read_events(etdump), delegate)
