"""The runner the ssh transport starts on a Linux board (executorch and elasticdit installed there).

    python -m elasticdit.profile.remote BUNDLE [--ops a,b] [--runs N] [--warmup K] [--threads T]
                                       [--no-memory] [--no-op-breakdown]
                                       [--schedule SPEC ...] [--steps N] [--guidance G]
                                       [--resolution HxW]

Prints one JSON object per line on stdout as each measurement finishes (`device`, `method`, `point`), then
`{"event": "done"}`; a failure prints `{"event": "error", "message": ...}` and exits 1. Streaming means the
results measured before a dropped connection are not lost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def emit(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _resolution(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)  # argparse reports a ValueError as a usage error


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m elasticdit.profile.remote")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--ops", default=None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-op-breakdown", action="store_true")
    parser.add_argument("--schedule", action="append", default=[])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--resolution", type=_resolution, default=None)
    args = parser.parse_args(argv)

    from ..quiet import silence_library_noise

    silence_library_noise()
    from ..bundle.reader import read_bundle
    from ..errors import ElasticDiTError
    from ..schedules import check, parse_schedule
    from .core import method_entries
    from .host import measure

    try:
        manifest = read_bundle(args.bundle, check=False).manifest
        points = method_entries(manifest, args.ops.split(",") if args.ops else None, args.resolution)
        held, at = manifest.point_resolutions(), tuple(args.resolution or manifest.resolution)
        schedules = [check(parse_schedule(spec), held, at) for spec in args.schedule]
        for event in measure(
            args.bundle,
            manifest,
            points,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            memory=not args.no_memory,
            with_ops=not args.no_op_breakdown,
            schedules=schedules,
            steps=args.steps or int(manifest.scheduler.get("steps", 1)),
            guidance=args.guidance,
            resolution=args.resolution,
        ):
            emit(event)
    except ElasticDiTError as exc:
        emit({"event": "error", "message": str(exc)})
        return 1
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
