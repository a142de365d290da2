"""Reproducible images: hash-pinned locks the Dockerfiles install from, and what a build without a registry means.

No network, no engine: the lock files and Dockerfiles are read as text (docs/images.md, "Reproducing an image").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lightly_devkit.engine import base_image_pull_failure, build_failure_verdict
from lightly_devkit.locks import IMAGES, LockError, check_lock, lock_path, parse_lock

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("image", IMAGES)
def test_every_lock_pins_and_hashes_everything_its_extra_needs(image: str) -> None:
    pins = check_lock(image)  # LockError names the file, the line and the fix
    assert all(p.hashes for p in pins.values())
    assert {"setuptools", "wheel"} <= set(pins)  # the build backend comes from the lock too


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_installs_only_from_its_lock(image: str) -> None:
    text = re.sub(r"\\\n", " ", (ROOT / f"Dockerfile.{image}").read_text())
    runs = [line for line in text.splitlines() if line.strip().startswith("RUN") and "pip install" in line]
    lock = f"requirements/{image}.txt"
    assert lock_path(image).exists() and lock in text
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert installs, f"Dockerfile.{image} installs nothing"
    assert f"--require-hashes --no-deps -r {lock}" in installs[0]
    for cmd in installs[1:]:  # the project itself: nothing resolved from an index
        assert "--no-deps" in cmd and "--no-build-isolation" in cmd, cmd
    assert re.search(r"^ARG PYTHON_IMAGE=", text, re.M) and "FROM ${PYTHON_IMAGE}" in text


def test_torch_is_the_pinned_build_in_the_worker_lock() -> None:
    pins = check_lock("worker")
    assert pins["torch"].version.split("+")[0] == "2.13.0"
    assert "torch" not in check_lock("server") and "torch" not in check_lock("operator")


BAD_LOCKS = [
    ("fastapi>=0.110 \\\n    --hash=sha256:" + "a" * 64, "not pinned with `==`"),
    ("fastapi==0.110.0", "has no --hash"),
    ("fastapi==0.110.0 --hash=md5:abc", "unexpected '--hash=md5:abc'"),
    ("-e .\n", "option '-e'"),
    ("a==1 --hash=sha256:" + "a" * 64 + "\nA==2 --hash=sha256:" + "b" * 64, "pinned twice"),
    ("# only comments\n", "no pinned packages"),
]


@pytest.mark.parametrize(("text", "message"), BAD_LOCKS, ids=[m for _, m in BAD_LOCKS])
def test_a_bad_lock_is_refused_with_file_line_and_fix(text: str, message: str) -> None:
    with pytest.raises(LockError, match=re.escape(message)) as err:
        parse_lock(text, "requirements/x.txt")
    assert str(err.value).startswith("requirements/x.txt")


def test_a_lock_missing_a_dependency_names_it(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    text = lock_path("operator").read_text()
    text = re.sub(r"(?ms)^kopf==.*?(?=^\S)", "", text)  # drop kopf and its hashes
    (tmp_path / "requirements" / "operator.txt").write_text(text)
    with pytest.raises(LockError, match=r"requirements/operator.txt lacks kopf \(pyproject.toml: kopf<2,>=1.45"):
        check_lock("operator", tmp_path)


# what engines print when the FROM image cannot be pulled (the podman line measured on this machine)
PODMAN = (
    "Error: creating build container: initializing source docker://python:3.11.11-slim-bookworm: pinging container "
    'registry registry-1.docker.io: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
    "on 10.255.255.53:53: no such host"
)
BUILDKIT = (
    "ERROR: failed to solve: python:3.11.11-slim-bookworm: failed to resolve source metadata for "
    "docker.io/library/python:3.11.11-slim-bookworm: failed to do request: Head: dial tcp: i/o timeout"
)
DOCKER_AUTH = "Error response from daemon: pull access denied for python, repository does not exist"
PIP_OFFLINE = (
    "STEP 9/10: RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/server.txt\n"
    "ERROR: Could not find a version that satisfies the requirement fastapi==0.115.0 (from versions: none)\n"
    "[Errno 111] Connection refused"
)
HASH_MISMATCH = "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE."


@pytest.mark.parametrize("output", [PODMAN, BUILDKIT, DOCKER_AUTH], ids=["podman", "buildkit", "docker"])
def test_an_unpullable_base_image_skips_outside_ci_and_fails_under_ci(output: str) -> None:
    log = f"$ podman build -f Dockerfile.server .\nSTEP 1/10: FROM python:3.11.11-slim-bookworm AS build\n{output}\n"
    verdict, reason = build_failure_verdict(log, ci=False)
    assert verdict == "skip" and output.strip() in reason  # the engine's own message is the reason
    verdict, reason = build_failure_verdict(log, ci=True)
    assert verdict == "fail" and "CI=true" in reason and output.strip() in reason


@pytest.mark.parametrize("output", [PIP_OFFLINE, HASH_MISMATCH], ids=["pip-network", "hash-mismatch"])
def test_any_other_build_failure_fails_everywhere(output: str) -> None:
    assert base_image_pull_failure(output) is None
    assert build_failure_verdict(output, ci=False)[0] == "fail"
    assert build_failure_verdict(output, ci=True)[0] == "fail"
