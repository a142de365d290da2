"""What users and clients see must not change by accident: the OpenAPI document the server answers and
the chart's rendered manifests, compared with the committed copies in ``tests/golden/``.

A refactoring leaves both unchanged. A change that means to change them regenerates the copies and
shows the difference in review::

    LIGHTLY_UPDATE_GOLDEN=1 scripts/test tests/test_shape_unchanged.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
import yaml
from test_helm import COMBINATIONS, _render

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LIGHTLY_UPDATE_GOLDEN") == "1"


def _compare(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; create it with LIGHTLY_UPDATE_GOLDEN=1"
    want = path.read_text()
    if text != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "now", n=2))
        pytest.fail(
            f"{path.relative_to(GOLDEN.parent.parent)} changed (if meant: LIGHTLY_UPDATE_GOLDEN=1):\n{diff[:6000]}",
            pytrace=False,
        )


def test_the_openapi_document_is_unchanged(tmp_path: Path) -> None:
    from lightly_server.app import create_app
    from lightly_server.settings import ServerSettings

    app = create_app(ServerSettings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    try:
        text = json.dumps(app.openapi(), indent=1, sort_keys=True) + "\n"
    finally:
        app.state.server.db.dispose()
    _compare(GOLDEN / "openapi.json", text)


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_the_rendered_chart_is_unchanged(combination: str) -> None:
    text = yaml.safe_dump_all(list(_render(combination)), sort_keys=True)
    _compare(GOLDEN / "chart" / f"{combination}.yaml", text)
