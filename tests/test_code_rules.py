"""Rules of docs/architecture.md that a machine checks besides the import contracts (`.importlinter`).

* Only settings read the environment: in each component, the environment is read by its settings object
  (built from CLI, environment and defaults in one place, ``lightly_protocol.options``); the command line
  hands ``os.environ`` to it, everything else gets values passed in. The exceptions below say why.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "protocol": ROOT / "protocol" / "lightly_protocol",
    "server": ROOT / "server" / "lightly_server",
    "operator": ROOT / "operator" / "lightly_operator",
    "worker": ROOT / "worker_image" / "lightly_worker",
}
#: where each component reads its environment
SETTINGS_MODULES = {"settings.py"}
#: other places that may read it, and why
EXCEPTIONS = {
    "worker/failpoints.py": "test-only fault injection, switched on by its own variable in the tests' processes",
    "worker/__init__.py": "the image's build-time version (LIGHTLY_WORKER_VERSION), read where the version is",
    "server/metrics.py": "prometheus_client's multiprocess mode is configured by PROMETHEUS_MULTIPROC_DIR",
    "operator/kube.py": "the Kubernetes client's own conventions (in-cluster KUBERNETES_SERVICE_HOST, KUBECONFIG)",
}


def _reads_environment(tree: ast.AST) -> list[int]:
    """Lines that read the environment: ``os.environ[...]``, ``os.environ.get``, ``os.getenv``, iterating it.
    Handing ``os.environ`` whole to a call (the settings loader) or setting a variable for a child process
    (``os.environ[K] = v``) is not reading it."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        is_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
        if is_os and node.attr == "getenv":
            lines.append(node.lineno)
        elif is_os and node.attr == "environ":
            parent = parents.get(node)
            handed_over = isinstance(parent, ast.Call) and node in parent.args
            written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            if not (handed_over or written):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for a in node.names if a.name in ("environ", "getenv")]
    return lines


def test_only_settings_read_the_environment() -> None:
    found = []
    for name, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            if (path.name in SETTINGS_MODULES and path.parent == root) or rel in EXCEPTIONS:
                continue
            found += [f"{rel}:{line}" for line in _reads_environment(ast.parse(path.read_text()))]
    assert not found, (
        "read the environment outside settings (pass the value in from the settings object):\n" + "\n".join(found)
    )


def test_the_exceptions_are_still_needed() -> None:
    for rel in EXCEPTIONS:
        name, _, sub = rel.partition("/")
        path = PACKAGES[name] / sub
        assert path.exists() and _reads_environment(ast.parse(path.read_text())), f"{rel} no longer needs its exception"


def test_every_package_is_installed() -> None:
    """A subpackage missing from ``[tool.setuptools] packages`` works in the editable install of the tests
    and is missing from the images (a non-editable install): every folder with an ``__init__.py`` is listed."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([top, *rel.parts]))
    assert found == listed, f"not listed: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
