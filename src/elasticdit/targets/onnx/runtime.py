"""Run an ONNX bundle's graphs on this host with ONNX Runtime (CPU execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import BundleError, first_line


def session_options(threads: int | None):
    """`threads` intra-op threads (ORT's default when None), sequential execution, no spinning (shared CPUs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


class OnnxRunner:
    """The graphs of a bundle, each loaded by path (external weights resolve next to it) on first use."""

    def __init__(self, bundle: str | Path, manifest: Any, threads: int | None = None):
        self.bundle = Path(bundle)
        self.threads = threads
        self.entries = {e.method: e for e in manifest.methods()}
        self._sessions: dict[str, Any] = {}

    def session(self, method: str) -> Any:
        if method not in self._sessions:
            import onnxruntime as ort

            entry = self.entries.get(method)
            if entry is None:
                raise BundleError(f"{self.bundle} has no method '{method}'")
            path = self.bundle / entry.file
            try:
                sess = ort.InferenceSession(
                    str(path), sess_options=session_options(self.threads), providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise BundleError(f"ONNX Runtime cannot load {entry.file}: {first_line(exc)}") from None
            want_in = [s.name for s in entry.inputs]
            want_out = [s.name for s in entry.outputs]
            got_in = [i.name for i in sess.get_inputs()]
            got_out = [o.name for o in sess.get_outputs()]
            if got_in != want_in or got_out != want_out:
                raise BundleError(
                    f"{entry.file} takes {got_in} -> {got_out}; the manifest says {want_in} -> {want_out}"
                )
            self._sessions[method] = sess
        return self._sessions[method]

    def run(self, entry: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        names = [s.name for s in self.entries[entry.method].inputs]
        feeds = {n: t.detach().contiguous().numpy() for n, t in zip(names, inputs, strict=True)}
        outputs = self.session(entry.method).run(None, feeds)
        return [torch.from_numpy(np.asarray(o)) for o in outputs]

    def note(self, entry: Any) -> str:
        return ""
