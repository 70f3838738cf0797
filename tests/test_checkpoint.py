"""Checkpoint format v1: round trip and one named error per kind of bad input (library and CLI)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from configs import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from elasticdit import errors
from elasticdit.checkpoint import load_checkpoint, save_checkpoint
from elasticdit.cli import app
from elasticdit.config import METADATA_KEY
from elasticdit.model.pipeline import random_weights

runner = CliRunner()
CFG = tiny_config(text_encoder=True)
WEIGHTS = random_weights(CFG, 3)


def write(path: Path, tensors=None, config: str | None = None, metadata: dict | None = None) -> Path:
    tensors = WEIGHTS if tensors is None else tensors
    meta = metadata if metadata is not None else {METADATA_KEY: config if config is not None else CFG.to_json()}
    path.write_bytes(st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    return path


def test_round_trip(tmp_path):
    sha = save_checkpoint(tmp_path / "a.safetensors", CFG, WEIGHTS)
    ck = load_checkpoint(tmp_path / "a.safetensors")
    assert ck.cfg == CFG and ck.sha256 == sha
    assert ck.tensors.keys() == WEIGHTS.keys()
    assert all(torch.equal(ck.tensors[k], WEIGHTS[k]) for k in WEIGHTS)
    prefixes = {k.split(".")[0] + "." + (k.split(".")[1] if k.startswith("vae.") else "") for k in WEIGHTS}
    assert prefixes == {"transformer.", "vae.decoder", "vae.encoder", "text_encoder."}
    # the same inputs give the same bytes
    sha2 = save_checkpoint(tmp_path / "b.safetensors", CFG, WEIGHTS)
    assert sha2 == sha
    # streamed to the file, the bytes safetensors serializes in memory (what checkpoints were written as before)
    in_memory = st_save(dict(sorted(WEIGHTS.items())), metadata={METADATA_KEY: CFG.to_json()})
    assert (tmp_path / "a.safetensors").read_bytes() == in_memory


def test_models_from_checkpoint_carry_the_weights(tmp_path):
    ck = load_checkpoint(save_checkpoint(tmp_path / "a.safetensors", CFG, WEIGHTS) and tmp_path / "a.safetensors")
    models = ck.models()
    state = models.state_dict()
    assert all(torch.equal(state[k], WEIGHTS[k]) for k in WEIGHTS)


def _bad_cases(tmp: Path):
    name = "transformer.transformer_blocks.0.attn.to_q.weight"
    dropped = {k: v for k, v in WEIGHTS.items() if not k.startswith("transformer.transformer_blocks.1.")}
    nan = dict(WEIGHTS, **{name: WEIGHTS[name].clone().fill_(float("nan"))})
    inf = dict(WEIGHTS, **{name: WEIGHTS[name].clone().fill_(float("inf"))})
    extra = dict(WEIGHTS, **{"transformer.bogus.weight": torch.zeros(3)})
    shape = dict(WEIGHTS, **{name: torch.zeros(3, 3)})
    ints = dict(WEIGHTS, **{name: WEIGHTS[name].to(torch.int32)})
    cfg = json.loads(CFG.to_json())
    cfg["elastic"]["depths"]["2"] = [0, 7]
    out_of_range = json.dumps(cfg)
    cfg["elastic"]["depths"]["2"] = [0, 0]
    repeated = json.dumps(cfg)
    cfg = json.loads(CFG.to_json())
    cfg["version"] = 9
    future = json.dumps(cfg)
    valid = write(tmp / "valid.safetensors").read_bytes()
    (tmp / "truncated.safetensors").write_bytes(valid[: len(valid) - 100])
    (tmp / "truncated_header.safetensors").write_bytes(valid[:40])
    (tmp / "png.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp / "empty.safetensors").write_bytes(b"")
    return [
        (tmp / "png.safetensors", errors.NotSafetensorsError, "not a safetensors file"),
        (tmp / "empty.safetensors", errors.NotSafetensorsError, "not a safetensors file"),
        (tmp / "truncated.safetensors", errors.TruncatedCheckpointError, "truncated"),
        (tmp / "truncated_header.safetensors", errors.TruncatedCheckpointError, "truncated"),
        (write(tmp / "noconfig.safetensors", metadata={"other": "x"}), errors.MissingConfigError, METADATA_KEY),
        (write(tmp / "badjson.safetensors", config="{not json"), errors.ConfigParseError, "not valid JSON"),
        (write(tmp / "future.safetensors", config=future), errors.UnsupportedVersionError, "version 9"),
        (write(tmp / "missing.safetensors", dropped), errors.MissingTensorsError, "transformer_blocks.1."),
        (write(tmp / "extra.safetensors", extra), errors.UnexpectedTensorsError, "transformer.bogus.weight"),
        (write(tmp / "shape.safetensors", shape), errors.ShapeMismatchError, r"to_q.weight' has shape \[3, 3\]"),
        (write(tmp / "ints.safetensors", ints), errors.DtypeError, "I32"),
        (write(tmp / "nan.safetensors", nan), errors.NonFiniteWeightsError, f"'{name}' contains NaN"),
        (write(tmp / "inf.safetensors", inf), errors.NonFiniteWeightsError, f"'{name}' contains Inf"),
        (write(tmp / "range.safetensors", config=out_of_range), errors.DepthPlanError, "block 7"),
        (write(tmp / "repeat.safetensors", config=repeated), errors.DepthPlanError, "repeats block 0"),
        (tmp / "absent.safetensors", errors.CheckpointError, "not found"),
    ]


def test_each_bad_input_has_a_named_error(tmp_path):
    for path, error, words in _bad_cases(tmp_path):
        with pytest.raises(error, match=words):
            load_checkpoint(path)


def test_resolution_the_grid_rules_reject(tmp_path):
    path = write(tmp_path / "ok.safetensors")
    with pytest.raises(errors.GridError, match="SSBA tile 2"):
        load_checkpoint(path, resolution=(96, 96))  # r2 grid 3x3


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    for path, _error, _words in _bad_cases(tmp_path):
        result = runner.invoke(app, ["inspect", str(path)])
        assert result.exit_code == 1, (path, result.output)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert "Traceback" not in result.stderr


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


def test_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({METADATA_KEY: CFG.to_json(), "x": Exploit()}))
    with pytest.raises(errors.UnsafePickleError, match="refused"):
        load_checkpoint(path)
    assert not Exploit.marker.exists()


def test_weights_only_pt_import(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({METADATA_KEY: CFG.to_json(), **WEIGHTS}, path)
    ck = load_checkpoint(path)
    assert torch.equal(ck.tensors["transformer.norm_out.linear.weight"], WEIGHTS["transformer.norm_out.linear.weight"])
    torch.save({METADATA_KEY: CFG.to_json(), **{k: v for k, v in list(WEIGHTS.items())[1:]}}, path)
    with pytest.raises(errors.MissingTensorsError):
        load_checkpoint(path)


NAMED = (errors.CheckpointError, errors.ConfigError)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_gives_only_named_errors(tmp_path, data):
    valid = write(tmp_path / "v.safetensors").read_bytes()
    header_len = struct.unpack("<Q", valid[:8])[0]
    blob = bytearray(valid)
    kind = data.draw(st.sampled_from(["flip", "truncate", "header_flip", "splice"]))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "header_flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, 8 + header_len - 1))
            blob[i] = data.draw(st.integers(0, 255))
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 32))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path / "c.safetensors"
    path.write_bytes(bytes(blob))
    with contextlib.suppress(NAMED):
        load_checkpoint(path)
