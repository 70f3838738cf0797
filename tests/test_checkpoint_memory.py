"""The checkpoint loader memory-maps safetensors: loading holds no second full copy of the weights, and the file's
pages can be dropped from the resident set once read (`Checkpoint.release_pages`); saving streams them to the
file, holding no serialized copy (issue 25).

Measured in a fresh child process on a moderately sized random model (~40 MB of float32 weights): the anonymous
memory `load_checkpoint` adds (the heap, not the file's mapped pages), the peak resident memory of loading and
building the networks, and the peak `save_checkpoint` adds, each against a bound computed from the weight bytes."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest
from configs import tiny_config
from memory_children import random_checkpoint, run_child

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from elasticdit.checkpoint import load_checkpoint

    def status():
        out = {}
        for line in open("/proc/self/status"):
            key, value = line.split(":", 1)
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
        return out

    load_checkpoint(sys.argv[2]).models()  # a tiny one first: torch's lazy imports before the baseline
    base = status()
    ck = load_checkpoint(sys.argv[1])
    loaded = status()
    if sys.argv[3:] == ["initialized"]:  # the mutation: networks built with their own initial weights first
        from elasticdit.model.pipeline import build_models

        models = build_models(ck.cfg)
        models.load_state_dict({k: v.float() for k, v in ck.tensors.items()})
    else:
        models = ck.models()
    built = status()
    print(json.dumps({"base": base, "loaded": loaded, "built": built}))
    """
)


SAVE_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from configs import tiny_config
    from elasticdit.checkpoint import save_checkpoint
    from elasticdit.model.pipeline import random_weights

    def status():
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                if line.startswith(("VmHWM", "VmRSS"))}

    out = Path(sys.argv[1])
    cfg = tiny_config()
    save_checkpoint(out / "tiny.safetensors", cfg, random_weights(cfg, 0))  # lazy imports before the baseline
    cfg = json.loads(sys.argv[2])
    from elasticdit.config import ModelConfig

    cfg = ModelConfig.from_dict(cfg)
    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM restarts from the current resident set: the next peak is the next step's

    reset_peak()
    start = status()
    tensors = random_weights(cfg, 0)
    if "cloned" in sys.argv[3:]:  # the mutation: the tensors copied out of the networks while they are alive
        tensors = {k: v.clone() for k, v in tensors.items()}
    built = status()
    reset_peak()
    base = status()
    if "in-memory" in sys.argv[3:]:  # the mutation: the file's bytes built in memory first, then written
        from safetensors.torch import save

        (out / "moderate.safetensors").write_bytes(save(tensors, metadata={"elasticdit.config": cfg.to_json()}))
    else:
        save_checkpoint(out / "moderate.safetensors", cfg, tensors)
    print(json.dumps({"start": start, "built": built, "base": base, "saved": status()}))
    """
)


def moderate_config():
    cfg = tiny_config()
    return dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, hidden_size=384, num_heads=6))


@pytest.fixture(scope="module")
def moderate_ckpt(tmp_path_factory) -> tuple[Path, int]:
    return random_checkpoint(tmp_path_factory.mktemp("moderate"), moderate_config())


RELEASE_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from elasticdit.checkpoint import load_checkpoint

    def rss_file():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssFile"))

    def digest(ck):
        h = hashlib.sha256()
        for name in sorted(ck.tensors):
            h.update(ck.tensors[name].numpy().tobytes())
        return h.hexdigest()

    ck = load_checkpoint(sys.argv[1])  # the finite check reads every weight
    before, held = digest(ck), rss_file()
    advised = 0 if sys.argv[2:] == ["kept"] else ck.release_pages()  # "kept": the mutation, nothing released
    released = rss_file()
    after = digest(ck)  # read back from the file
    print(json.dumps({"held": held, "released": released, "reread": rss_file(), "advised": advised,
                      "equal": before == after}))
    """
)


def measure(path: Path, warmup: Path, *flags: str) -> dict:
    return run_child(CHILD, str(path), str(warmup), *flags)


@pytest.mark.slow
def test_loading_memory_maps_the_weights_and_stays_under_its_bound(moderate_ckpt, bare_ckpt):
    path, weight_bytes = moderate_ckpt
    assert weight_bytes > 30e6  # large enough that a copy cannot hide in the noise
    m = measure(path, bare_ckpt)
    heap_added = m["loaded"]["RssAnon"] - m["base"]["RssAnon"]
    # memory-mapped: the tensors are the file's pages, not the heap (measured 0.11x; the loader that read the file
    # and parsed the bytes kept a heap copy: 1.07x)
    assert heap_added < 0.25 * weight_bytes, (heap_added, weight_bytes)
    # peak while loading and building the networks: the file's pages (1x) + the buffers; the networks are built
    # with parameters on the meta device and the checkpoint's tensors assigned (measured 1.09-1.13x; 1.98x when
    # the networks were built with initialized weights first). The goal is 1.5x.
    peak = m["built"]["VmHWM"] - m["base"]["VmRSS"]
    assert peak < 1.5 * weight_bytes, (peak, weight_bytes)
    initialized = measure(path, bare_ckpt, "initialized")  # the bound sees a second copy of the weights
    assert initialized["built"]["VmHWM"] - initialized["base"]["VmRSS"] > 1.5 * weight_bytes, initialized


def test_release_pages_drops_the_read_weights_and_keeps_their_values(moderate_ckpt):
    path, weight_bytes = moderate_ckpt
    m = run_child(RELEASE_CHILD, str(path))
    assert m["advised"] >= weight_bytes
    assert m["held"] - m["released"] > 0.8 * weight_bytes, m  # the weights' pages left the resident set
    assert m["equal"], m  # and every tensor reads the same bytes again
    assert m["reread"] - m["released"] > 0.8 * weight_bytes, m  # from the file: the pages came back
    kept = run_child(RELEASE_CHILD, str(path), "kept")  # the bound sees pages that were not released
    assert kept["held"] - kept["released"] < 0.2 * weight_bytes, kept


def measure_save(tmp_path: Path, *flags: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return run_child(SAVE_CHILD, str(tmp_path), json.dumps(moderate_config().to_dict()), *flags, env=env)


def test_saving_streams_the_weights_to_the_file(tmp_path, moderate_ckpt):
    _, weight_bytes = moderate_ckpt
    m = measure_save(tmp_path)
    # streamed: the peak while saving stays at the tensors already held (measured 0.12x; the bytes built in
    # memory first, as before issue 25's fix, added 1.91x: the serialized buffer and its copy as Python bytes)
    added = m["saved"]["VmHWM"] - m["base"]["VmRSS"]
    assert added < 0.5 * weight_bytes, (added, weight_bytes)
    in_memory = measure_save(tmp_path, "in-memory")  # the bound sees a serialized copy of the weights
    assert in_memory["saved"]["VmHWM"] - in_memory["base"]["VmRSS"] > 0.5 * weight_bytes, in_memory


def test_random_weights_hold_the_weights_once(tmp_path, moderate_ckpt):
    _, weight_bytes = moderate_ckpt
    m = measure_save(tmp_path)
    # the networks' own parameters are returned, not copies (measured 0.98x; 1.98x when cloned)
    peak = m["built"]["VmHWM"] - m["start"]["VmRSS"]
    assert peak < 1.5 * weight_bytes, (peak, weight_bytes)
    cloned = measure_save(tmp_path, "cloned")
    assert cloned["built"]["VmHWM"] - cloned["start"]["VmRSS"] > 1.5 * weight_bytes, cloned
