"""Ids and timestamps in the protocol's formats."""

import os
import time


def new_id() -> str:
    """A 24-hex id shaped like a MongoDB ObjectId: 4 bytes of seconds, then 8 random bytes."""
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{os.urandom(8).hex()}"


def now_ms() -> int:
    return int(time.time() * 1000)
