"""Profiling: latency per operating point and stage, per-op breakdown, peak memory, on the host or a device.

`profile_bundle(ProfileRequest(...))` returns the report `elasticdit profile --json` prints. Transports:
`host` (in process), `adb` (phones, executor_runner), `ssh` (Linux boards, `python -m elasticdit.profile.remote`),
`ios` (Core ML on a Mac). See docs/profiling.md.
"""

from .core import ProfileRequest, parse_device, profile_bundle

__all__ = ["ProfileRequest", "parse_device", "profile_bundle"]
