"""The container engine and the project's three images, built once per build context.

The engine comes from ``CONTAINER_ENGINE`` (a path or a command name, e.g. the podman wrapper
``/work/shared/containers/podman``), else the first of ``docker`` / ``podman`` on PATH whose engine
answers ``ENGINE info`` (a ``docker`` client without a daemon does not count).

:func:`build_images` builds ``Dockerfile.worker``, ``Dockerfile.operator`` and ``Dockerfile.server``
as :data:`TAGS` (``localhost/lightly-worker-fleet/{worker,operator,server}:dev``). Each image carries
the label :data:`HASH_LABEL`: a SHA-256 over the Dockerfile, the build arguments and every file its
``COPY`` instructions take from the build context (``.dockerignore`` applied). When the image with
that tag already carries the same hash, the build is skipped, so test sessions (and other suites)
that call this build each image once per change of its sources. Concurrent callers on one machine
serialize on a lock file per image.

    python -m lightly_devkit.engine check                 # which engine, or why none works
    python -m lightly_devkit.engine build [worker ...]    # build (or reuse) images, print timings
    python -m lightly_devkit.engine build --force server  # rebuild even when the hash matches
    python -m lightly_devkit.engine hash                  # the context hashes, nothing built

``LIGHTLY_PYTHON_IMAGE`` (optional) is passed as ``--build-arg PYTHON_IMAGE=...``; the podman wrapper
passes its local base itself.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE_ENV = "CONTAINER_ENGINE"
BASE_ENV = "LIGHTLY_PYTHON_IMAGE"
HASH_LABEL = "org.lightly-worker-fleet.context-hash"
REGISTRY = "localhost/lightly-worker-fleet"
IMAGES = ("worker", "operator", "server")
TAGS = {name: f"{REGISTRY}/{name}:dev" for name in IMAGES}
DOCKERFILES = {name: f"Dockerfile.{name}" for name in IMAGES}


class EngineUnavailable(RuntimeError):
    """No working container engine; the message says why."""


class BuildError(RuntimeError):
    """An image build failed; the message holds the end of the build log."""


#: what docker, BuildKit and podman/buildah print when the FROM image cannot be pulled (no registry
#: reachable, DNS, auth, rate limits); matched line by line, never pip's own network errors
_PULL_FAILURE = re.compile(
    r"pull access denied|failed to resolve source metadata|failed to resolve reference|error pulling image"
    r"|initializing source docker://|manifest unknown|requested access to the resource is denied"
    r"|unable to pull|failed to pull|pinging container registry|toomanyrequests",
    re.IGNORECASE,
)


def base_image_pull_failure(output: str) -> str | None:
    """The engine's line saying the base image could not be pulled, or None (some other build failure)."""
    for line in output.splitlines():
        if _PULL_FAILURE.search(line):
            return line.strip()
    return None


def build_failure_verdict(output: str, ci: bool) -> tuple[str, str]:
    """What a test does with a failed image build: ("skip", the engine's message) when the base image
    could not be pulled and this is not CI; ("fail", why) otherwise (CI=true needs every image)."""
    reason = base_image_pull_failure(output)
    if reason is None:
        return "fail", "the build failed (not a base image pull)"
    if ci:
        return "fail", f"CI=true and the base image cannot be pulled: {reason}"
    return "skip", f"the container engine cannot pull the base image: {reason}"


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Engine:
    """A container engine command (docker, podman or a wrapper around either)."""

    command: str  # as resolved: an absolute path
    kind: str  # "docker" or "podman"

    def cmd(self, *args: str) -> list[str]:
        return [self.command, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = False, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(*args), timeout=timeout, check=check, **kw)

    def inspect_image(self, tag: str) -> dict | None:
        """``image inspect`` of a local image, or None when there is no such image."""
        res = self.run("image", "inspect", tag, timeout=60)
        if res.returncode != 0:
            return None
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None

    def image_labels(self, tag: str) -> dict[str, str] | None:
        """The labels of a local image, or None when there is no such image."""
        info = self.inspect_image(tag)
        if info is None:
            return None
        return dict((info.get("Config") or {}).get("Labels") or info.get("Labels") or {})

    def build_flags(self) -> list[str]:
        """Flags for ``build``: podman keeps every stage as an untagged image unless told not to."""
        return ["--layers=false"] if self.kind == "podman" else []

    def run_flags(self) -> list[str]:
        """Flags for ``run`` that keep the host's proxy settings out of a container (podman injects them)."""
        return ["--http-proxy=false"] if self.kind == "podman" else []


def _kind(command: str, info_output: str) -> str:
    name = Path(command).name.lower()
    if "podman" in name or "podman" in info_output.lower():
        return "podman"
    return "docker"


def probe(command: str, timeout: float = 120) -> tuple[Engine | None, str]:
    """(engine, "") if ``command info`` works, else (None, why not)."""
    path = shutil.which(command)
    if path is None:
        return None, f"{command!r} is not an executable or not on PATH"
    try:
        res = subprocess.run([path, "info"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`{command} info` failed: {exc}"
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {res.returncode}"
        return None, f"`{command} info` exited {res.returncode} (no working engine behind it): {last}"
    return Engine(path, _kind(path, res.stdout)), ""


_cached: dict[str | None, tuple[Engine | None, str]] = {}


def find_engine() -> Engine:
    """The engine to use (see the module docstring); raises :class:`EngineUnavailable` with the reason."""
    wanted = os.environ.get(ENGINE_ENV) or None
    if wanted not in _cached:
        if wanted:
            engine, why = probe(wanted)
            _cached[wanted] = (engine, f"{ENGINE_ENV}={wanted}: {why}" if engine is None else "")
        else:
            reasons = []
            for name in ("docker", "podman"):
                engine, why = probe(name)
                if engine is not None:
                    _cached[wanted] = (engine, "")
                    break
                reasons.append(why)
            else:
                _cached[wanted] = (None, f"no container engine ({ENGINE_ENV} unset): " + "; ".join(reasons))
    engine, why = _cached[wanted]
    if engine is None:
        raise EngineUnavailable(why)
    return engine


def unavailable_reason() -> str | None:
    """None when an engine works, else why not."""
    try:
        find_engine()
    except EngineUnavailable as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# build context hashing


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _pattern(pat: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``*``/``?`` stay within a path element, ``**`` spans any."""
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pat.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pat[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pat[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pat[i]), i + 1
    return re.compile(out + r"\Z")


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    """Docker's .dockerignore matching (anchored at the context root, ``!`` exceptions, the last match
    wins); a pattern matching a directory excludes everything below it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        regex = _pattern((pat[1:] if negate else pat).strip("/"))
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile's ``COPY``/``ADD`` instructions take (not ``--from``)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.strip().split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = words[1:]
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        sources += args[:-1]
    return sources


def context_hash(name: str, root: Path = ROOT, build_args: dict[str, str] | None = None) -> str:
    """SHA-256 over the Dockerfile, the build args and the files its COPYs take (names, modes, contents)."""
    dockerfile = root / DOCKERFILES[name]
    patterns = _dockerignore(root)
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + dockerfile.read_bytes() + b"\0")
    h.update(b"dockerignore\0" + "\n".join(patterns).encode() + b"\0")
    for k, v in sorted((build_args or {}).items()):
        h.update(f"arg\0{k}={v}\0".encode())
    files: set[str] = set()
    for src in copy_sources(dockerfile):
        for match in sorted(root.glob(src)) if any(c in src for c in "*?[") else [root / src]:
            if match.is_file():
                candidates = [match]
            elif match.is_dir():
                candidates = [p for p in match.rglob("*") if p.is_file()]
            else:
                raise FileNotFoundError(f"{DOCKERFILES[name]}: COPY {src}: {match} does not exist")
            for p in candidates:
                rel = p.relative_to(root).as_posix()
                if not _ignored(rel, patterns):
                    files.add(rel)
    for rel in sorted(files):
        p = root / rel
        h.update(f"file\0{rel}\0{p.stat().st_mode & 0o777:o}\0".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# builds


@dataclass
class BuildResult:
    name: str
    tag: str
    context_hash: str
    built: bool  # False: an image with the same context hash was reused
    seconds: float  # time spent here (the build, or just the check when reused)
    log_tail: str = field(default="", repr=False)

    def describe(self) -> str:
        how = f"built in {self.seconds:.1f} s" if self.built else f"reused (same context hash, {self.seconds:.1f} s)"
        return f"{self.tag}: {how} [{self.context_hash[:12]}]"


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"lightly-worker-fleet-build-{name}.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_args() -> dict[str, str]:
    base = os.environ.get(BASE_ENV)
    return {"PYTHON_IMAGE": base} if base else {}


def build_image(
    name: str,
    *,
    engine: Engine | None = None,
    force: bool = False,
    root: Path = ROOT,
    timeout: float = 3600,
    log: Path | None = None,
) -> BuildResult:
    """Build ``Dockerfile.<name>`` as ``TAGS[name]`` unless that image already has this context hash."""
    if name not in TAGS:
        raise ValueError(f"unknown image {name!r}; one of {', '.join(IMAGES)}")
    engine = engine or find_engine()
    tag = TAGS[name]
    args = _build_args()
    start = time.monotonic()
    with _lock(name):
        digest = context_hash(name, root, args)
        previous = engine.inspect_image(tag)
        labels = (previous or {}).get("Config", {}).get("Labels") or (previous or {}).get("Labels") or {}
        if not force and labels.get(HASH_LABEL) == digest:
            return BuildResult(name, tag, digest, False, time.monotonic() - start)
        cmd = ["build", *engine.build_flags(), "-f", str(root / DOCKERFILES[name]), "-t", tag]
        cmd += ["--label", f"{HASH_LABEL}={digest}"]
        for k, v in args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        cmd.append(str(root))
        log_path = log or Path(tempfile.gettempdir()) / f"lightly-worker-fleet-build-{name}.log"
        with open(log_path, "w") as fh:
            fh.write("$ " + " ".join(engine.cmd(*cmd)) + "\n")
            fh.flush()
            try:
                res = subprocess.run(engine.cmd(*cmd), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
                rc = res.returncode
            except subprocess.TimeoutExpired:
                rc = -1
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
        if rc != 0:
            why = "timed out" if rc == -1 else f"exited {rc}"
            raise BuildError(f"building {tag} from {DOCKERFILES[name]} {why} (full log: {log_path}):\n{tail}")
        seconds = time.monotonic() - start
        old_id = (previous or {}).get("Id")
        if old_id and old_id != (engine.inspect_image(tag) or {}).get("Id"):
            # the image the tag named before is now untagged: drop it (best effort; fails while in use)
            engine.run("rmi", old_id, timeout=120)
        return BuildResult(name, tag, digest, True, seconds, tail)


def build_images(
    names: Sequence[str] = IMAGES, *, engine: Engine | None = None, force: bool = False
) -> dict[str, BuildResult]:
    """Build (or reuse) the named images, in order; see :func:`build_image`."""
    engine = engine or find_engine()
    return {n: build_image(n, engine=engine, force=force) for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightly_devkit.engine", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say which engine would be used, or why none works")
    b = sub.add_parser("build", help="build (or reuse) images")
    b.add_argument("names", nargs="*", metavar="IMAGE", help=f"one or more of {', '.join(IMAGES)} (default: all)")
    b.add_argument("--force", action="store_true", help="build even when the image has the same context hash")
    sub.add_parser("hash", help="print each image's context hash")
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "names", [])) - set(IMAGES)
    if unknown:
        parser.error(f"unknown image(s) {', '.join(sorted(unknown))}; choose from {', '.join(IMAGES)}")
    if args.command == "hash":
        for n in IMAGES:
            print(f"{TAGS[n]} {context_hash(n, ROOT, _build_args())}")
        return 0
    try:
        engine = find_engine()
    except EngineUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"{engine.kind}: {engine.command}")
        return 0
    for n in args.names or IMAGES:
        try:
            print(build_image(n, engine=engine, force=args.force).describe(), flush=True)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
