"""``lightly-worker``: the selection worker (the full worker lands with its own issue)."""

from __future__ import annotations

import sys

from . import __version__

BANNER = f"Lightly worker (lightly-worker-fleet) version {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "sanity_check=True" in args:
        print(BANNER)
        print("Congratulations! It looks like the Lightly container is running!")
        return 0
    print(f"{BANNER}\nusage: lightly-worker sanity_check=True", file=sys.stderr)
    return 2
