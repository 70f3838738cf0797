"""Turn measurement events into the profile report, and write it as JSON, CSV and PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..errors import ProfileError
from .stats import E2E_RULE, SCHEDULE_E2E_RULE, e2e_ms, pareto_front, schedule_e2e_ms, summarize

TOP_OPS = 25  # op kinds kept per method in the JSON (the CSV has every event)


def read_quality(path: Path) -> dict[str, float]:
    """`{"operating_points": [{"name", "score"}]}` (what `elasticdit eval --json` prints) -> name: score."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read quality figures from {path}: {exc}") from None
    rows = doc.get("operating_points") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ProfileError(f"{path} has no 'operating_points' list of {{name, score}}")
    scores = {}
    for row in rows:
        if not isinstance(row, dict) or "name" not in row or not isinstance(row.get("score"), int | float):
            raise ProfileError(f"{path}: every operating point needs a 'name' and a numeric 'score', got {row!r}")
        scores[row["name"]] = float(row["score"])
    return scores


def _trim_ops(ops: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ops:
        return None
    return {k: v for k, v in ops.items() if k != "events"} | {"ops": ops["ops"][:TOP_OPS]}


def _method_stats(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if not event or not event.get("ms"):
        return None
    return summarize(event["ms"])


def _load(event: dict[str, Any]) -> dict[str, Any]:
    load = event.get("load_ms") or {}
    return {
        k: (round(v, 3) if isinstance(v, int | float) else None)
        for k, v in {"first": load.get("first"), "warm": load.get("warm")}.items()
    }


def build_report(
    manifest: Any,
    bundle: str,
    device: dict[str, Any],
    settings: dict[str, Any],
    events: list[dict[str, Any]],
    scores: dict[str, float] | None = None,
    error: str | None = None,
    schedules: list[Any] | None = None,
    resolution: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The profile document (`--json`); `events` are what a transport yielded, in order; its `resolution` is
    the one every row was measured at (`resolution`, None: the bundle's default)."""
    by_kind = {e["kind"]: e for e in events if e["event"] == "method"}
    text, decode = by_kind.get("encode_text"), by_kind.get("decode")
    text_stats, decode_stats = _method_stats(text), _method_stats(decode)
    text_ms = text_stats["median"] if text_stats else None
    decode_ms = decode_stats["median"] if decode_stats else None
    meta = {p.name: p for p in manifest.points_at(resolution)}
    companions = manifest.companions_bytes(resolution)
    points = []
    for e in (e for e in events if e["event"] == "point"):
        p = meta[e["name"]]
        denoise = summarize(e["ms"])
        mem = e.get("memory") or {}
        row = {
            "name": e["name"],
            "compression_ratio": p.compression_ratio,
            "depth": p.depth,
            "method": p.method,
            "tokens": p.tokens,
            "gflops": p.gflops,
            "weight_bytes": p.weight_bytes,  # planned (manifest): what plan uses when no peak was measured
            "arena_bytes": p.arena_bytes,
            "companions_bytes": companions,  # planned: the text encoder and decoder loaded with the point
            "load_ms": _load(e),
            "denoise_ms": denoise,
            "denoise_cpu_ms": summarize(e["cpu_ms"]) if e.get("cpu_ms") else None,
            "decode_ms": decode_stats,
            "text_encoder_ms": text_stats,
            "e2e_ms": e2e_ms(
                denoise["median"], settings["steps"], settings["denoise_calls_per_step"], text_ms, decode_ms
            ),
            "e2e_measured_ms": summarize(e["e2e_measured_ms"]) if e.get("e2e_measured_ms") else None,
            "e2e_breakdown": {
                "text_encoder": text_ms,
                "denoise": round(settings["steps"] * settings["denoise_calls_per_step"] * denoise["median"], 3),
                "decode": decode_ms,
            },
            "peak_memory_mb": mem.get("peak_mb"),
            "memory": mem or None,
            "ops": (_trim_ops(e.get("ops")) or {}).get("ops", []),
            "ops_summary": {k: v for k, v in (_trim_ops(e.get("ops")) or {}).items() if k != "ops"} or None,
        }
        if scores and e["name"] in scores:
            row["score"] = scores[e["name"]]
        points.append(row)
    wanted = settings.get("operating_points") or [p.name for p in manifest.points_at(resolution)]
    done = {p["name"] for p in points}
    doc = {
        "device": device,
        "bundle": bundle,
        "target": manifest.target,
        "recipe": manifest.recipe.name,
        "resolution": list(resolution or manifest.resolution),
        "settings": dict(settings, e2e_rule=E2E_RULE),
        "complete": error is None and done >= set(wanted),
        "missing": [n for n in wanted if n not in done],
        "error": error,
        "text_encoder": {
            "method": text["method"],
            "load_ms": _load(text),
            "ms": text_stats,
            "cpu_ms": summarize(text["cpu_ms"]) if text.get("cpu_ms") else None,
            "ops": (_trim_ops(text.get("ops")) or {}).get("ops", []),
        }
        if text
        else None,
        "decoder": {
            "method": decode["method"],
            "load_ms": _load(decode),
            "ms": decode_stats,
            "cpu_ms": summarize(decode["cpu_ms"]) if decode.get("cpu_ms") else None,
            "ops": (_trim_ops(decode.get("ops")) or {}).get("ops", []),
        }
        if decode
        else None,
        "operating_points": points,
    }
    if schedules:
        doc["schedules"] = schedule_rows(schedules, points, settings, events, text, decode)
    return doc


def schedule_rows(
    schedules: list[Any],
    points: list[dict[str, Any]],
    settings: dict[str, Any],
    events: list[dict[str, Any]],
    text: dict[str, Any] | None,
    decode: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """A schedule's end-to-end latency computed from the per-point step medians, and measured where the transport
    ran it whole (`schedule_run.py`); process CPU time beside wall time where the transport reports it."""
    steps, calls = settings["steps"], settings["denoise_calls_per_step"]
    wall = {p["name"]: p["denoise_ms"]["median"] for p in points}
    cpu = {p["name"]: p["denoise_cpu_ms"]["median"] for p in points if p.get("denoise_cpu_ms")}
    gflops = {p["name"]: p["gflops"] or 0.0 for p in points}

    def median(event: dict[str, Any] | None, key: str) -> float | None:
        return summarize(event[key])["median"] if event and event.get(key) else None

    measured = {tuple((p["point"], p["share"]) for p in e["phases"]): e for e in events if e["event"] == "schedule"}
    rows = []
    for schedule in schedules:
        counts = schedule.steps_per_point(steps)
        run = measured.get(tuple((p.point, p.share) for p in schedule.phases))
        computed = computed_cpu = None
        if all(p in wall for p in schedule.points):
            computed = schedule_e2e_ms(counts, calls, wall, median(text, "ms"), median(decode, "ms"))
        if all(p in cpu for p in schedule.points) and all(e is None or e.get("cpu_ms") for e in (text, decode)):
            computed_cpu = schedule_e2e_ms(counts, calls, cpu, median(text, "cpu_ms"), median(decode, "cpu_ms"))
        mem = (run or {}).get("memory") or {}
        rows.append(
            {
                **schedule.to_dict(),
                "name": schedule.label,
                "steps_per_point": counts,
                "gflops_per_image": round(
                    sum(gflops.get(p, 0.0) * n for p, n in counts.items()) * (2 if settings.get("cfg") else 1), 6
                ),
                "computed_e2e_ms": computed,
                "computed_e2e_cpu_ms": computed_cpu,
                "measured_e2e_ms": summarize(run["ms"]) if run else None,
                "measured_e2e_cpu_ms": summarize(run["cpu_ms"]) if run and run.get("cpu_ms") else None,
                "peak_memory_mb": mem.get("peak_mb"),
                "memory": mem or None,
                "rule": SCHEDULE_E2E_RULE,
            }
        )
    return rows


CSV_COLUMNS = (
    "name",
    "compression_ratio",
    "depth",
    "gflops",
    "score",
    "load_first_ms",
    "load_warm_ms",
    "denoise_min_ms",
    "denoise_median_ms",
    "denoise_p90_ms",
    "decode_median_ms",
    "text_encoder_median_ms",
    "e2e_ms",
    "peak_memory_mb",
    "top_op",
    "top_op_ms",
)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for p in report["operating_points"]:
        top = p["ops"][0] if p["ops"] else {}
        rows.append(
            {
                "name": p["name"],
                "compression_ratio": p["compression_ratio"],
                "depth": p["depth"],
                "gflops": p["gflops"],
                "score": p.get("score"),
                "load_first_ms": p["load_ms"]["first"],
                "load_warm_ms": p["load_ms"]["warm"],
                "denoise_min_ms": p["denoise_ms"]["min"],
                "denoise_median_ms": p["denoise_ms"]["median"],
                "denoise_p90_ms": p["denoise_ms"]["p90"],
                "decode_median_ms": (p["decode_ms"] or {}).get("median"),
                "text_encoder_median_ms": (p["text_encoder_ms"] or {}).get("median"),
                "e2e_ms": p["e2e_ms"],
                "peak_memory_mb": p["peak_memory_mb"],
                "top_op": top.get("name"),
                "top_op_ms": top.get("ms"),
            }
        )
    return rows


def write_outputs(report: dict[str, Any], out: Path, events: list[dict[str, Any]]) -> list[Path]:
    """profile.json, profile.csv, ops.csv (every ETDump event), latency.png, tradeoff.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "profile.json", out / "profile.csv", out / "ops.csv"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    with written[1].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(csv_rows(report))
    with written[2].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "event", "delegated", "median_ms"])
        for e in events:
            for ev in ((e.get("ops") or {}).get("events") or []) if e["event"] in ("point", "method") else []:
                w.writerow([e["method"], ev["name"], ev["delegated"], ev["ms"]])
    if report["operating_points"]:
        written += plot(report, out)
    return written


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["operating_points"]
    names = [p["name"] for p in points]
    steps, calls = report["settings"]["steps"], report["settings"]["denoise_calls_per_step"]
    denoise = [p["e2e_breakdown"]["denoise"] for p in points]
    decode = [p["e2e_breakdown"]["decode"] or 0.0 for p in points]
    text = [p["e2e_breakdown"]["text_encoder"] or 0.0 for p in points]
    device = report["device"].get("name") or report["device"].get("kind")

    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2), 4.5))
    ax.bar(names, text, label="text encoder", color="#9b59b6")
    ax.bar(names, denoise, bottom=text, label=f"denoise ({steps} steps x {calls})", color="#2e86c1")
    ax.bar(names, decode, bottom=[a + b for a, b in zip(text, denoise, strict=True)], label="decode", color="#f39c12")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title(f"Latency per operating point ({device})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    latency = out / "latency.png"
    fig.savefig(latency, dpi=110)
    plt.close(fig)

    scored = all("score" in p for p in points)
    ys = [p["score"] if scored else (p["gflops"] or 0.0) for p in points]
    xs = [p["e2e_ms"] for p in points]
    front = pareto_front(list(zip(xs, ys, strict=True)))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs, ys, color="#7f8c8d", zorder=2)
    for x, y, n in zip(xs, ys, names, strict=True):
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="#c0392b", label="Pareto front", zorder=3)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("quality score" if scored else "GFLOPs per denoise step (no quality figures given)")
    ax.set_title("Quality vs latency" if scored else "Compute vs latency")
    ax.legend()
    fig.tight_layout()
    tradeoff = out / "tradeoff.png"
    fig.savefig(tradeoff, dpi=110)
    plt.close(fig)
    return [latency, tradeoff]
