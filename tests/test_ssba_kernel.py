"""elasticdit's SSBA kernel equals the masked reference: called directly, through torch.export + ExecuTorch,
and inside a whole operating point; its build cache, its refusals, and the manifest's runtime ops."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import export_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.errors import KernelError
from elasticdit.kernels import build
from elasticdit.kernels.direct import native_ssba_attention
from elasticdit.ssba.kernel import KernelAttention
from elasticdit.ssba.lowering import make_core
from elasticdit.ssba.pattern import compile_pattern
from elasticdit.targets.android.runtime import require_runtime_ops

TOL = 2e-6  # float32 rounding, as for the other lowerings (tests/test_ssba_lowering.py)
# ... plus a few ulps of the value: the kernel sums in another order than masked (online softmax over key
# blocks), so outputs near 1-2 differ by up to ~2e-6 (hypothesis found 2.03e-6 on a value of 1.42)
RTOL = 2e-6


@pytest.fixture(scope="session")
def kernels():
    """Built once (cached on disk across sessions, keyed by the sources) and loaded into this process."""
    try:
        return build.load_kernels()
    except KernelError as exc:  # in CI a skip is a failure (tests/ci_skips.py): .ci/run installs g++
        pytest.skip(f"the SSBA kernel cannot be built here: {exc}")


@st.composite
def layers(draw, max_tiles=7):
    tile = draw(st.sampled_from([1, 2, 3, 4, 8]))
    tiles = st.integers(1, max_tiles if tile < 8 else 3)
    return dict(
        grid=(tile * draw(tiles), tile * draw(tiles)),  # square or not, smaller than the window too
        tile=tile,
        window=draw(st.integers(0, 2)),
        shifted=draw(st.booleans()),
        text_len=draw(st.integers(0, 6)),
        batch=draw(st.integers(1, 2)),
        heads=draw(st.integers(1, 3)),
        head_dim=draw(st.sampled_from([4, 8, 12, 16, 32, 64])),  # vector, partial-vector and scalar paths
        seed=draw(st.integers(0, 2**16)),
    )


def qkv(case, scale=1.0):
    g = torch.Generator().manual_seed(case["seed"])
    s = case["grid"][0] * case["grid"][1] + case["text_len"]
    shape = (case["batch"] * case["heads"], s, case["head_dim"])
    return tuple(torch.randn(*shape, generator=g) * scale for _ in range(3))


def pattern_of(case):
    return compile_pattern(case["grid"], case["tile"], case["window"], case["shifted"], case["text_len"])


def native(case, q, k, v, shift=None, threaded=True):
    p = pattern_of(case)
    shift = p.shift if shift is None else shift
    return native_ssba_attention(q, k, v, p.grid, p.tile, p.window, shift, case["head_dim"] ** -0.5, threaded)


@settings(max_examples=150, deadline=None)
@given(layers(), st.booleans())
def test_kernel_equals_masked(kernels, case, threaded):
    q, k, v = qkv(case)
    ref = make_core("masked", case["head_dim"], pattern_of(case))(q, k, v)
    torch.testing.assert_close(native(case, q, k, v, threaded=threaded), ref, rtol=RTOL, atol=TOL)


def test_kernel_at_scale_and_with_large_scores(kernels):
    """The benchmark's layer (64x64 grid, tile 8, 77 text tokens, 64-dim heads), with scores ~N(0, 1) and
    ~N(0, 16^2) (nearly one-hot softmax: the online softmax rescales across key blocks without overflow or lost
    mass). Against float64: the kernel's error is no larger than the float32 masked reference's own."""
    case = dict(grid=(64, 64), tile=8, window=1, shifted=True, text_len=77, batch=1, heads=1, head_dim=64, seed=3)
    pattern = pattern_of(case)
    for scale in (1.0, 4.0):
        q, k, v = qkv(case, scale)
        v = v / scale
        exact = make_core("masked", 64, pattern).double()(q.double(), k.double(), v.double())
        float32_error = (make_core("masked", 64, pattern)(q, k, v).double() - exact).abs().max().item()
        kernel_error = (native(case, q, k, v).double() - exact).abs().max().item()
        assert kernel_error <= 1.5 * float32_error + 1e-6, (scale, kernel_error, float32_error)


def test_a_wrong_pattern_is_caught(kernels):
    """Mutation: the same kernel given another shift (or window) no longer equals the reference."""
    case = dict(grid=(16, 16), tile=4, window=1, shifted=True, text_len=3, batch=1, heads=1, head_dim=16, seed=5)
    q, k, v = qkv(case)
    ref = make_core("masked", 16, pattern_of(case))(q, k, v)
    assert (native(case, q, k, v, shift=0) - ref).abs().max() > 1e-2
    assert (native(case, q, k, v, shift=1) - ref).abs().max() > 1e-2


def test_kernel_rejects_bad_problems(kernels):
    q = k = v = torch.randn(1, 10 * 10 + 2, 8)
    with pytest.raises(KernelError, match="tile must divide"):
        native_ssba_attention(q, k, v, (10, 10), 4, 1, 0, 0.3)
    with pytest.raises(KernelError, match="shorter than the image grid"):
        native_ssba_attention(q, k, v, (12, 12), 4, 1, 0, 0.3)
    with pytest.raises(KernelError, match="one \\[B\\*H, S, D\\] shape"):
        native_ssba_attention(q, k[:, :-1], v, (10, 10), 5, 1, 0, 0.3)


def test_op_in_pytorch_equals_masked_and_exports_as_one_node():
    """Eager (the op's PyTorch implementation) and the exported graph: one `elasticdit.ssba_attention` call on
    q, k, v and the pattern's scalars; no tables, no gathers. Needs no compiler."""
    case = dict(grid=(16, 12), tile=4, window=1, shifted=True, text_len=4, batch=1, heads=2, head_dim=8, seed=9)
    pattern, inputs = pattern_of(case), qkv(case)
    core = make_core("kernel", 8, pattern)
    assert isinstance(core, KernelAttention)
    torch.testing.assert_close(core(*inputs), make_core("masked", 8, pattern)(*inputs), rtol=0, atol=TOL)
    graph = torch.export.export(_Core(core).eval(), inputs, strict=False).graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    assert [str(n.target) for n in calls] == ["elasticdit.ssba_attention.default"]
    assert calls[0].args[3:8] == (16, 12, 4, 1, 2)
    dense = compile_pattern((8, 8), 4, 1, True, 3)  # 2x2 tiles inside one window: plain attention
    assert not isinstance(make_core("kernel", 8, dense), KernelAttention)


class _Core(torch.nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, q, k, v):
        return self.core(q, k, v)


def _to_pte(core, inputs, path: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(_Core(core).eval(), inputs, strict=False)
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return path


@settings(max_examples=6, deadline=None)
@given(layers(max_tiles=4))
def test_kernel_through_executorch_runtime(kernels, tmp_path_factory, case):
    from executorch.runtime import Runtime

    pattern, inputs = pattern_of(case), qkv(case)
    ref = make_core("masked", case["head_dim"], pattern)(*inputs)
    path = _to_pte(make_core("kernel", case["head_dim"], pattern), inputs, tmp_path_factory.mktemp("pte") / "k.pte")
    (out,) = Runtime.get().load_program(path).load_method("forward").execute(list(inputs))
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=TOL)


def test_build_is_cached_and_keyed_by_the_sources(kernels, tmp_path, monkeypatch):
    path = build.library_path()
    stamp = path.stat().st_mtime_ns
    assert build.library_path() == path and path.stat().st_mtime_ns == stamp  # no rebuild
    import shutil

    copy = tmp_path / "native"
    shutil.copytree(build.native_dir(), copy)
    monkeypatch.setattr(build, "native_dir", lambda: copy)
    assert build.build_key() == path.parent.name
    (copy / "ssba_kernel.cpp").write_text((copy / "ssba_kernel.cpp").read_text() + "\n// changed\n")
    assert build.build_key() != path.parent.name  # an edited source builds anew
    monkeypatch.setenv("ELASTICDIT_ARCH_FLAGS", "-march=x86-64-v2")
    assert build.build_key() != path.parent.name


def test_build_without_a_compiler_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ELASTICDIT_KERNELS_LIB", raising=False)
    monkeypatch.setenv("ELASTICDIT_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_compiler", lambda: None)
    with pytest.raises(KernelError, match="no C\\+\\+ compiler found"):
        build.library_path()
    monkeypatch.setenv("ELASTICDIT_KERNELS_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(KernelError, match="not a file"):
        build.library_path()
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_runtime_ops_check_refuses_what_the_runtime_lacks(kernels):
    require_runtime_ops(["elasticdit::ssba_attention.out", "aten::embedding.out"])
    require_runtime_ops([])  # a bundle that needs only the stock runtime: nothing to check
    with pytest.raises(KernelError, match="lacks elasticdit::no_such_op.out, which the bundle"):
        require_runtime_ops(["elasticdit::ssba_attention.out", "elasticdit::no_such_op.out"])


@pytest.fixture(scope="module")
def kernel_bundle(kernels, tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's sparse point exported with the `android-fp32-kernel` recipe."""
    out = tmp_path_factory.mktemp("kernel") / "bundle"
    export_cli(tiny_ckpt, "android", out, "--recipe", "android-fp32-kernel", "--ops", "r1_d4")
    return out


@pytest.mark.slow
def test_kernel_recipe_bundle_lists_its_runtime_ops_and_verifies(kernel_bundle, tiny_ckpt):
    """A whole Android bundle with `lowering.attention = "kernel"`: the sparse ratio-1 layers call the op
    (nothing gathers), the manifest says the runtime needs it (and only it: encode_text's token lookup is a
    stock `aten` op), verify runs it in executorch.runtime and the host profiler times it."""
    manifest = json.loads((kernel_bundle / "manifest.json").read_text())
    assert manifest["runtime_ops"] == ["elasticdit::ssba_attention.out"]
    assert list(manifest)[-2:] == ["runtime_ops", "files"]
    outside = manifest["backend_report"]["denoise_r1_d4"]["outside_ops"]
    assert set(outside) == {"getitem", "elasticdit_ssba_attention_default"}, outside  # the `tiles` gathers are gone
    assert "aten_embedding_default" in manifest["backend_report"]["encode_text"]["outside_ops"]
    result = CliRunner().invoke(app, ["verify", str(kernel_bundle), "--checkpoint", str(tiny_ckpt), "--json"])
    assert result.exit_code == 0, result.output
    assert all(m["passed"] for m in json.loads(result.stdout)["methods"])
    result = CliRunner().invoke(app, ["profile", str(kernel_bundle), "--runs", "2", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output  # the host profiler loads the kernels too (memory child included)
    point = json.loads(result.stdout)["operating_points"][0]
    assert point["name"] == "r1_d4" and point["denoise_ms"]["median"] > 0
    assert any("ssba_attention" in o["name"] and not o["delegated"] for o in point["ops"])  # in the ETDump


def test_stock_bundle_lists_no_runtime_ops(android_bundle):
    """The `tiles` bundle calls only stock ops outside XNNPACK (gathers, the token lookup): the manifest has no
    `runtime_ops` key, so it reads (and hashes) as it did before the key existed."""
    from elasticdit.bundle.reader import read_bundle

    doc = json.loads((android_bundle[0] / "manifest.json").read_text())
    assert "runtime_ops" not in doc
    assert "aten_embedding_default" in doc["backend_report"]["denoise_r1_d4"]["outside_ops"]
    manifest = read_bundle(android_bundle[0]).manifest
    assert manifest.runtime_ops == [] and manifest.to_dict() == doc


def _with_runtime_ops(bundle: Path, tmp_path: Path, ops) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["runtime_ops"] = ops
    (copy / "manifest.json").write_text(json.dumps(doc))
    return copy


REFUSERS = {
    "verify": lambda b, t, ck: ["verify", str(b), "--checkpoint", str(ck)],
    "profile": lambda b, t, ck: ["profile", str(b), "--runs", "1", "--warmup", "0"],
    "generate": lambda b, t, ck: ["generate", str(b), "-p", "a red circle", "-o", str(t / "x.png"), "--steps", "1"],
    "eval": lambda b, t, ck: ["eval", str(b), "--prompts", "1"],
}


@pytest.mark.parametrize("command", sorted(REFUSERS))
def test_every_host_path_refuses_a_runtime_without_the_bundles_ops(android_bundle, tiny_ckpt, tmp_path, command):
    """One check (targets/android/runtime.py require_runtime_ops) guards every command that runs an Android
    bundle on this host: a listed op this runtime lacks is one line, exit 1, before anything runs. The op is not
    elasticdit's, so no kernel build is involved."""
    bad = _with_runtime_ops(android_bundle[0], tmp_path, ["llama::no_such_op.out"])
    result = CliRunner().invoke(app, REFUSERS[command](bad, tmp_path, tiny_ckpt))
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "error: this ExecuTorch runtime lacks llama::no_such_op.out, which the bundle's program calls (a bundle "
        "exported with lowering.attention = 'kernel' needs elasticdit's kernels, docs/ssba.md)\n"
    )
    assert not (tmp_path / "x.png").exists()


def test_the_ssh_remote_runner_refuses_too(android_bundle, tmp_path, capsys):
    from elasticdit.profile.remote import main

    bad = _with_runtime_ops(android_bundle[0], tmp_path, ["llama::no_such_op.out"])
    assert main([str(bad), "--runs", "1", "--no-memory"]) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["error"]
    assert "lacks llama::no_such_op.out" in events[0]["message"]


@pytest.mark.parametrize("ops", ["elasticdit::ssba_attention.out", [1], [""]])
def test_a_malformed_runtime_ops_is_a_named_error(android_bundle, tmp_path, ops):
    from elasticdit.bundle.reader import read_bundle
    from elasticdit.errors import BundleError

    bad = _with_runtime_ops(android_bundle[0], tmp_path, ops)
    with pytest.raises(BundleError, match="'runtime_ops' must be a list of operator names"):
        read_bundle(bad)


NEON_CASES = [
    dict(grid=(32, 32), tile=8, window=1, shifted=True, text_len=77, batch=1, heads=1, head_dim=64, seed=11),
    dict(grid=(12, 20), tile=4, window=2, shifted=False, text_len=5, batch=2, heads=1, head_dim=16, seed=12),
    dict(grid=(9, 6), tile=3, window=0, shifted=True, text_len=0, batch=1, heads=2, head_dim=12, seed=13),
]


def test_kernel_neon_build_under_qemu(tmp_path):
    """The phone's code path: the same source cross-compiled for arm64 (NEON lanes and tiles), run under
    qemu-aarch64 through a driver without ExecuTorch (native/check/ssba_file.cpp), equals masked."""
    import shutil
    import struct
    import subprocess

    import numpy as np

    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not (cxx and qemu):
        pytest.skip("no aarch64 cross compiler / qemu-aarch64 (.ci/run installs g++-aarch64-linux-gnu and qemu-user)")
    native_dir = build.native_dir()
    exe = tmp_path / "ssba_neon"
    sources = [native_dir / "ssba_kernel.cpp", native_dir / "check" / "ssba_file.cpp"]
    flags = ["-std=c++17", "-O3", "-ffp-contract=fast", "-static"]
    subprocess.run([cxx, *flags, "-o", str(exe), *map(str, sources)], check=True, capture_output=True)
    for case in NEON_CASES:
        pattern, (q, k, v) = pattern_of(case), qkv(case)
        header = struct.pack("<8q", *q.shape, *pattern.grid, pattern.tile, pattern.window, pattern.shift)
        data = header + struct.pack("<f", case["head_dim"] ** -0.5) + b"".join(t.numpy().tobytes() for t in (q, k, v))
        (tmp_path / "in.bin").write_bytes(data)
        run = subprocess.run([qemu, str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert run.stdout.strip() == "neon"
        out = torch.from_numpy(np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(q.shape))
        ref = make_core("masked", case["head_dim"], pattern)(q, k, v)
        torch.testing.assert_close(out, ref, rtol=0, atol=TOL)


def test_kernel_splits_big_tiles_and_long_texts(kernels):
    """Tile 16 (256 queries, split into blocks of 64) and 130 text tokens (two blocks of text queries)."""
    case = dict(grid=(64, 64), tile=16, window=1, shifted=True, text_len=130, batch=1, heads=1, head_dim=32, seed=7)
    q, k, v = qkv(case)
    ref = make_core("masked", 32, pattern_of(case))(q, k, v)
    torch.testing.assert_close(native(case, q, k, v), ref, rtol=0, atol=TOL)
