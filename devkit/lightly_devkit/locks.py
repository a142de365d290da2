"""The hash-pinned lock files the images install from (requirements/<image>.txt), and their checks.

Each Dockerfile runs ``pip install --require-hashes --no-deps -r requirements/<image>.txt`` and then the
project itself with ``--no-deps --no-build-isolation``: every package in an image, build backend
included, is one of these exact files. ``python -m lightly_devkit.locks`` checks all three (docs/images.md,
"Reproducing an image", says how to regenerate them).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("operator", "server", "worker")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}$")


class LockError(ValueError):
    """A lock file that does not pin, hash or cover what it must (the message names file and line)."""


class Pin(NamedTuple):
    version: str
    hashes: tuple[str, ...]
    line: int


def lock_path(image: str, root: Path = ROOT) -> Path:
    return root / "requirements" / f"{image}.txt"


def parse_lock(text: str, source: str = "<lock>") -> dict[str, Pin]:
    """name (canonical) -> Pin; raises LockError unless every entry is ``name==version`` with ``--hash``es."""
    pins: dict[str, Pin] = {}
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append((start, buf.strip()))
        buf = ""
    for no, entry in logical:
        spec, *options = entry.split()
        if spec.startswith("-"):
            raise LockError(f"{source}:{no}: option {spec!r} in a lock file; only `name==version --hash=...` lines")
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^=;\s]+)", spec)
        if not m:
            raise LockError(f"{source}:{no}: {spec!r} is not pinned with `==` (regenerate: see docs/images.md)")
        bad = [o for o in options if not _HASH.match(o)]
        if bad:
            raise LockError(f"{source}:{no}: {spec}: unexpected {bad[0]!r} (only --hash=sha256:<64 hex>)")
        if not options:
            raise LockError(f"{source}:{no}: {spec} has no --hash (pip --require-hashes would refuse it)")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise LockError(f"{source}:{no}: {spec}: {name} is pinned twice (also line {pins[name].line})")
        pins[name] = Pin(m.group(2), tuple(o.split("=", 1)[1] for o in options), no)
    if not pins:
        raise LockError(f"{source}: no pinned packages")
    return pins


def required(image: str, root: Path = ROOT) -> list[Requirement]:
    """What pyproject.toml says the image needs: the project's dependencies, its extra, the build backend."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    if image not in extras:
        raise LockError(f"pyproject.toml has no extra [{image}] (one of {', '.join(sorted(extras))})")
    reqs = project.get("dependencies", []) + extras[image] + pyproject["build-system"]["requires"]
    return [Requirement(r) for r in reqs]


def check_lock(image: str, root: Path = ROOT) -> dict[str, Pin]:
    """Parse requirements/<image>.txt and check it covers pyproject.toml; LockError says what is wrong."""
    path = lock_path(image, root)
    if not path.exists():
        raise LockError(f"{path.relative_to(root)} does not exist (generate it: see docs/images.md)")
    pins = parse_lock(path.read_text(), str(path.relative_to(root)))
    for req in required(image, root):
        name = canonicalize_name(req.name)
        if name not in pins:
            raise LockError(f"{path.relative_to(root)} lacks {req.name} (pyproject.toml: {req}); regenerate it")
        if not req.specifier.contains(Version(pins[name].version), prereleases=True):
            raise LockError(
                f"{path.relative_to(root)}:{pins[name].line}: {req.name}=={pins[name].version} does not satisfy "
                f"pyproject.toml's {req}; regenerate it"
            )
    return pins


def main() -> int:
    failed = False
    for image in IMAGES:
        try:
            pins = check_lock(image)
        except LockError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            failed = True
        else:
            print(f"ok   requirements/{image}.txt: {len(pins)} packages, all pinned and hashed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
