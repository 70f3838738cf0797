"""The native app-side runtime's Python side: `elasticdit-run` (C++17 on ExecuTorch's Module API, sources in
`runtime/`) built on demand (`build`) and run as a subprocess (`run`). It depends on nothing above `errors`: the
Android target hands it out (`Target.app_runner`), and `generate`, `profile` (host and adb) drive it through
that seam. See docs/runtime.md.
"""
