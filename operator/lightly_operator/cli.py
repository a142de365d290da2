"""``lightly-operator``: runs the LightlyWorker operator (lands with its own issue)."""

from __future__ import annotations

import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    print(f"lightly-operator {__version__}", file=sys.stderr)
    return 0
