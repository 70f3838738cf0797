"""The native app-side runtime: `elasticdit-run` (C++17 on ExecuTorch's Module API, sources in `runtime/`),
built on demand (`build`), run as a subprocess (`run`), and the hooks `generate --runner native` and
`profile --runner native` use. See docs/runtime.md.
"""
