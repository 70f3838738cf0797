"""An android-8da4w export holds the float weights at most once up to the target's lowering, and drops them from
the resident set once read: loading, building, slicing, counting costs, quantizing and torch.export add at their
peak less than 1.4x the float32 weight bytes (one more copy of the float weights breaks that bound), and leave
none of the checkpoint's read pages resident (keeping them is seen) (issue 25, item 5).

Measured in a fresh child process on a model large enough to see a copy (the tiny config at width 768, no decoder:
~280 MB of float32 weights, one point): a warm-up pass over the tiny checkpoint first (the libraries' lazy imports
and one-time allocations), then the exporter's steps up to `lowering.lower` (as `export_bundle` runs them), their
peak VmHWM above the VmRSS before them, and the RssFile they left. The mutations must fail: one extra copy of the
checkpoint's tensors held breaks the bound; no page released leaves the file resident. (Not released pages do not
reliably break the peak bound: their peak, 1.37-1.90x in ten runs, is the file plus an anonymous peak that varies
from run to run, 0.37-0.90x; the file pages left are exact.) What XNNPACK's lowering adds after this (about 0.4x the
weights of each method it lowers, at paper scale) is measured by benchmarks/export_scale.py, not here (RESULTS.md,
"Paper scale: export")."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from configs import tiny_config
from memory_children import random_checkpoint, run_child

# x the float32 weight bytes: above what these steps add (1.08-1.10x measured in ten runs, the peak while loading),
# below what they add with one more copy of the float weights (1.99-2.00x)
BOUND = 1.4

CHILD = textwrap.dedent(
    """
    import json, sys
    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.exporter import point_entry
    from elasticdit.lowering import lower
    from elasticdit.operating_points import select
    from elasticdit.progress import Reporter
    from elasticdit.recipes import load_recipe
    from elasticdit.slicing import export_units
    from elasticdit.targets import TARGETS

    target = TARGETS["android"]
    recipe = load_recipe("android-8da4w", target, TARGETS)

    def status():
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                if line.startswith(("VmHWM", "VmRSS", "RssFile"))}

    def export(path, op, flags):
        ck = load_checkpoint(path)
        # as export_bundle: the read pages released after loading and as quantizing replaces the float weights;
        # "kept" (a mutation) releases nothing, "copy" (a mutation) holds one more copy of the weights throughout
        release = (lambda: 0) if "kept" in flags else ck.release_pages
        held = [{k: v.clone() for k, v in ck.tensors.items()}] if "copy" in flags else []
        release()
        models = ck.models()
        units = export_units(models, select(ck.cfg, [op]), [ck.cfg.resolution], recipe.attention)
        entries = [point_entry(ck, u) for u in units if u.point is not None]
        return held, entries, lower(models, units, recipe, target.formulation, Reporter(None, 1), release)

    export(sys.argv[2], "r2_d2", [])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM restarts from the current resident set: the peak below is the export's
    base = status()
    kept = export(sys.argv[1], "r1_d4", sys.argv[3:])
    print(json.dumps({"base": base, "after": status()}))
    """
)


@pytest.fixture(scope="module")
def moderate_bare(tmp_path_factory) -> tuple[Path, int]:
    cfg = tiny_config(vae=False)
    cfg = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, hidden_size=768, num_heads=12))
    return random_checkpoint(tmp_path_factory.mktemp("moderate"), cfg)


def added(path: Path, warm: Path, *flags: str) -> tuple[int, int]:
    """Bytes the export's steps up to lowering added at their peak, and the bytes of mapped file pages they left
    resident, in a fresh child."""
    m = run_child(CHILD, str(path), str(warm), *flags)
    return m["after"]["VmHWM"] - m["base"]["VmRSS"], m["after"]["RssFile"] - m["base"]["RssFile"]


@pytest.mark.slow
def test_8da4w_export_holds_the_float_weights_once(moderate_bare, bare_ckpt):
    path, weight_bytes = moderate_bare
    # the checkpoint's pages as each step reads them (released after loading and after each quantized block), the
    # int4-in-int8 quantized copy with its scales, torch.export; costs are counted on fake tensors. Measured 1.08x.
    # Before: 1.38-1.85x with a real counting forward and nothing released; 2.22-2.60x with the deep copy of the
    # float tensors before quantizing that the 8da4w scheme made before issue 25
    plain, left = added(path, bare_ckpt)
    assert plain < BOUND * weight_bytes, (plain / weight_bytes, weight_bytes)
    assert left < 0.1 * weight_bytes, left / weight_bytes  # the pages read are released (measured 0.001x)
    _, kept = added(path, bare_ckpt, "kept")
    assert kept > 0.9 * weight_bytes, kept / weight_bytes  # the check sees pages never released (1.001x)
    copied, _ = added(path, bare_ckpt, "copy")
    assert copied > BOUND * weight_bytes, (copied / weight_bytes, weight_bytes)  # the bound sees the copy
