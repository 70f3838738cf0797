"""pytest plugin: in CI (ELASTICDIT_CI=1, set by .ci/run) a skipped test is a failure, because CI installs
everything the suite needs (sshd, diffusers, onnxruntime...). A test that needs what CI cannot have (macOS,
a phone) says so with `@pytest.mark.host_specific("why")`, and its skip stays a skip."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "host_specific(why): may skip in CI too (needs macOS, a phone, ...)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("ELASTICDIT_CI") and item.get_closest_marker("host_specific") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which provides what this test needs: {reason}"
