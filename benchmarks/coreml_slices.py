"""What the `slices` SSBA lowering costs in Core ML ops at a G x G grid (issue 24, item 5): a static report.

Core ML cannot run here, so this converts the attention core alone (q, k, v of [8 heads, G*G + 77, 64],
tile 8, window 1, a shifted layer) with coremltools exactly as the iOS exporter does (torch.export ->
run_decompositions -> ct.convert, mlprogram, iOS18, fp16 compute) and reads the MIL program: op count by
type, the largest intermediate tensor, and the sum of all intermediates (an upper bound on the traffic).

Variants:
* `slices`: the shipped lowering (per window offset, one slice per run of consecutive tiles, then concats);
* `bands`: fewer, larger slices: one slice of the (2w+1)-tile band per query tile row / column (each
  window row or column at once), then one concat per axis;
* `dense`: plain attention, for scale.

    python benchmarks/coreml_slices.py --grid 64 --json coreml_slices.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table

from elasticdit.ssba.slices import SlicesAttention

TILE, WINDOW, TEXT, HEAD_DIM, HEADS = 8, 1, 77, 64, 8


class BandsAttention(SlicesAttention):
    """`slices` with each query tile row's (column's) key band taken by one slice of span tiles."""

    def _windows(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch, nth, ntw, tt, dim = x.shape
        span_h, span_w = self.pattern.window_span
        starts_h, starts_w = (s.tolist() for s in self.pattern.window_starts)
        cols = [x.narrow(2, s, span_w).reshape(batch, nth, 1, span_w * tt, dim) for s in starts_w]
        x = torch.cat(cols, 2) if len(cols) > 1 else cols[0]  # [B, nth, ntw, span_w*T*T, D]
        rows = [
            x.narrow(1, s, span_h).permute(0, 2, 1, 3, 4).reshape(batch, 1, ntw, span_h * span_w * tt, dim)
            for s in starts_h
        ]
        return [torch.cat(rows, 1) if len(rows) > 1 else rows[0]]


class Core(torch.nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, q, k, v):
        return self.core(q, k, v)


def mil_report(core: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict:
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    with torch.no_grad():
        ep = torch.export.export(Core(core).eval(), inputs).run_decompositions({})
    model = ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        inputs=[ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in zip("qkv", inputs, strict=True)],
        skip_model_load=True,
    )
    ops = Counter()
    largest, largest_op, total = 0, "", 0
    for op in model._mil_program.functions["main"].operations:
        ops[op.op_type] += 1
        if op.op_type == "const":
            continue
        for out in op.outputs:
            shape = [int(d) for d in out.shape]
            nbytes = int(np.prod(shape)) * (2 if types.builtin_to_string(out.dtype) in ("fp16", "int16") else 4)
            total += nbytes
            if nbytes > largest:
                largest, largest_op = nbytes, f"{op.op_type} {shape}"
    compute = {k: v for k, v in ops.items() if k != "const"}
    return {
        "ops": sum(compute.values()),
        "const_ops": ops.get("const", 0),
        "by_type": dict(sorted(compute.items(), key=lambda kv: -kv[1])),
        "largest_intermediate_bytes": largest,
        "largest_intermediate": largest_op,
        "intermediate_bytes_total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from elasticdit.quiet import silence_library_noise
    from elasticdit.ssba.lowering import make_core
    from elasticdit.ssba.pattern import compile_pattern

    silence_library_noise()
    pattern = compile_pattern((args.grid, args.grid), TILE, WINDOW, True, TEXT)
    g = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(HEADS, args.grid**2 + TEXT, HEAD_DIM, generator=g) for _ in range(3))
    cores = {
        "slices": make_core("slices", HEAD_DIM, pattern),
        "bands": BandsAttention(HEAD_DIM, pattern),
        "dense": make_core("dense", HEAD_DIM, pattern),
    }
    ref = make_core("masked", HEAD_DIM, pattern)(*inputs)
    errors = {n: float((c(*inputs) - ref).abs().max()) for n, c in cores.items() if n != "dense"}
    reports = {}
    for name, core in cores.items():
        print(f"converting {name} ...", flush=True)
        reports[name] = mil_report(core, inputs)
    rows = [
        [
            n,
            r["ops"],
            r["largest_intermediate_bytes"] / 2**20,
            r["largest_intermediate"],
            r["intermediate_bytes_total"] / 2**20,
            ", ".join(f"{k} {v}" for k, v in list(r["by_type"].items())[:6]),
        ]
        for n, r in reports.items()
    ]
    print(f"\nCore ML (mlprogram, fp16) of SSBA attention alone, grid {args.grid}, {HEADS} heads x {HEAD_DIM}, +{TEXT}")
    print_table(["variant", "ops", "largest MB", "largest", "sum of intermediates MB", "most frequent ops"], rows)
    print("max |eager - masked|: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    if args.json:
        args.json.write_text(json.dumps({"grid": args.grid, "reports": reports, "errors": errors}, indent=2))


if __name__ == "__main__":
    main()
