"""Loopback networking helpers shared by tests, benchmarks and scripts."""

from __future__ import annotations

import socket

# Proxy variables that would send loopback HTTP through a proxy; clear them for local servers.
PROXY_VARS = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
