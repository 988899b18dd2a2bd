"""Kept for bench/servers.py, which imports ``tests.loopback``: see tests/support/loopback.py."""

from tests.support.loopback import *  # noqa: F403
