"""Errors shared by the device transports."""

from __future__ import annotations

from ..errors import DeviceError


class DeviceGoneError(DeviceError):
    """The device disappeared (unplugged, rebooted, connection dropped) while the profile was running; what was
    measured before is kept and the report is marked incomplete."""
