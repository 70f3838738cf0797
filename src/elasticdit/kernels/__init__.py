"""elasticdit's native ExecuTorch kernels: the block-sparse SSBA attention operator's C++ (`native/`), its
on-demand build and loading into this process's runtime (`build`), and a direct call for checks and benchmarks
(`direct`). The operator's schema and the `kernel` lowering are in elasticdit/ssba/kernel.py; the check that a
runtime has every op a bundle lists is the Android target's (targets/android/runtime.py)."""
