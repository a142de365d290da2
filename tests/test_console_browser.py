"""The web console in a real browser: Debian's headless chromium driven by Playwright's Python API (never a
downloaded browser) against a real ``lightly-server``. Each page is checked for its content, for no console
errors (a Content-Security-Policy violation is one), for 0 serious or critical axe-core violations (the
vendored tests/vendor/axe.min.js), and the main flows are walked by keyboard. A failing test saves a
screenshot under its tmp dir and prints the path.

Without chromium these tests skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Backend, backend
from console_kit import SCRIPT, SCRIPT_FILE, Seeded, seed

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
CHROMIUM = shutil.which("chromium")
GALLERY_FILES = [SCRIPT_FILE, *[f"img-{i:03d}.png" for i in range(60)]]


def _need_chromium() -> str:
    if CHROMIUM is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; under CI=true the browser tests must run")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    path = _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, str, str, Seeded]]:
    """A SQLite server that reads LOCAL datasources from a folder of real PNGs, and one user's data."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("console-browser")
    root = tmp / "local"
    for name in GALLERY_FILES:
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (40, 120, 200)).save(path, format="PNG")
    with backend("sqlite", tmp) as b:
        server = b.start_server("--local-datasource-root", str(root))
        token = b.token("dora")
        yield b, server.url, token, seed(server.url, token, GALLERY_FILES)


class Tab:
    """One page of a fresh browser context, with its console errors and alerts recorded."""

    def __init__(self, browser, base: str, tmp: Path, *, bypass_csp: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.context = browser.new_context(base_url=base, bypass_csp=bypass_csp)
        self.page = self.context.new_page()
        self.tmp = tmp
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def sign_in(self, token: str) -> None:
        """By keyboard: Tab from the top of the sign-in page to the token field, type, Enter."""
        self.page.goto("/ui/login")
        focused = tab_to(self.page, lambda el: el.get("id") == "token")
        assert focused
        self.page.keyboard.type(token)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url("**/ui/runs")

    def close(self) -> None:
        self.context.close()


def tab_to(page, want, limit: int = 80) -> bool:  # type: ignore[no-untyped-def]
    """Press Tab until the focused element satisfies ``want`` ({id, text, tag, href}); False if never."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        el = page.evaluate(
            "() => { const e = document.activeElement; return {id: e.id, text: (e.innerText || e.value || '').trim(),"
            " tag: e.tagName, href: e.getAttribute('href') || ''}; }"
        )
        if want(el):
            return True
    return False


@contextlib.contextmanager
def screenshot_on_failure(tab: Tab, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shot = tab.tmp / f"{name}.png"
        with contextlib.suppress(Exception):
            tab.page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failure: {shot}")
        raise


@contextlib.contextmanager
def signed_in_tab(browser, base: str, token: str, tmp: Path, name: str) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    """A tab signed in with ``token``, a screenshot ``name``.png when the block fails, closed after."""
    tab = Tab(browser, base, tmp)
    try:
        tab.sign_in(token)
        with screenshot_on_failure(tab, name):
            yield tab
    finally:
        tab.close()


def serious_axe_violations(browser, base: str, token: str, path: str, tmp: Path) -> list[str]:  # type: ignore[no-untyped-def]
    """axe-core's serious and critical violations on ``path`` (its own context: axe is injected, so the
    page's Content-Security-Policy is bypassed there only)."""
    tab = Tab(browser, base, tmp, bypass_csp=True)
    try:
        tab.sign_in(token)
        tab.page.goto(path)
        tab.page.wait_for_load_state("networkidle")
        tab.page.add_script_tag(path=str(AXE))
        found = tab.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
    finally:
        tab.close()
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][:3]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def pages(s: Seeded) -> dict[str, list[str]]:
    """Each page and what it must show."""
    return {
        "/ui/runs": ["Runs", s.run_id, "COMPLETED", "Waiting for a worker", s.scheduled_id],
        f"/ui/runs/{s.run_id}": ["Stage timings", "EMBEDDING", "SAMPLING", f"done {SCRIPT}", "picked"],
        "/ui/workers": ["Workers", "cats-worker", "gpu"],
        "/ui/datasets": ["Datasets", "cats"],
        f"/ui/datasets/{s.dataset_id}": ["Datasources", "LOCAL", "images", "picked", "Schedule a run"],
        f"/ui/datasets/{s.dataset_id}/tags/{s.tag_id}": ["Tag picked", SCRIPT_FILE],
        f"/ui/datasets/{s.dataset_id}/schedule": ["Schedule a run on cats", "Priority"],
        f"/ui/runs/{s.run_id}/embedding": ["Embeddings of run", "2-D projection (PCA)"],
    }


def test_every_page_shows_its_content_without_console_errors_or_serious_axe_violations(
    chromium, site, tmp_path
) -> None:
    _b, base, token, s = site
    tab = Tab(chromium, base, tmp_path)
    try:
        tab.sign_in(token)
        for path, expected in pages(s).items():
            name = path.strip("/").replace("/", "_")
            with screenshot_on_failure(tab, name):
                tab.page.goto(path)
                tab.page.wait_for_load_state("networkidle")
                text = tab.page.inner_text("main")
                for what in expected:
                    assert what in text, f"{path} does not show {what!r}"
                assert tab.errors == [], f"{path}: console errors {tab.errors}"
                assert tab.dialogs == [], f"{path}: a script ran ({tab.dialogs})"
                violations = serious_axe_violations(chromium, base, token, path, tmp_path)
                assert violations == [], f"{path}: {violations}"
    finally:
        tab.close()


def test_gallery_thumbnails_load_lazily_and_file_names_are_text(chromium, site, tmp_path) -> None:
    _b, base, token, s = site
    with signed_in_tab(chromium, base, token, tmp_path, "gallery") as tab:
        tab.page.goto(f"/ui/datasets/{s.dataset_id}/tags/{s.tag_id}")
        items = tab.page.locator("#gallery li.thumb")
        assert items.count() == 48  # one page
        first = tab.page.locator("#gallery img").first
        first.scroll_into_view_if_needed()
        tab.page.wait_for_function("() => document.querySelector('#gallery img').naturalWidth === 32")
        tab.page.locator("#gallery li.more").scroll_into_view_if_needed()
        tab.page.wait_for_function("() => document.querySelectorAll('#gallery li.thumb').length === 61")
        captions = tab.page.locator("figcaption").all_inner_texts()
        assert SCRIPT_FILE in captions
        assert tab.dialogs == [] and tab.errors == []


def test_run_page_follows_the_run_live(chromium, site, tmp_path) -> None:
    _b, base, token, s = site
    api = httpx.Client(base_url=base, params={"token": token}, trust_env=False, timeout=30)
    rid = api.post("/v1/docker/runs", json={"dockerVersion": "1.0.0", "datasetId": s.dataset_id}).json()["id"]
    with signed_in_tab(chromium, base, token, tmp_path, "live") as tab:
        tab.page.goto(f"/ui/runs/{rid}")
        assert tab.page.inner_text("#run-state") == "STARTED"
        now = int(time.time() * 1000)
        entry = {"ts": now, "level": "INFO", "group": "run", "msg": "embedding now", "state": "EMBEDDING"}
        assert api.put(f"/v1/docker/runs/{rid}/logs", json=[entry]).status_code == 204
        assert api.put(f"/v1/docker/runs/{rid}", json={"state": "EMBEDDING"}).status_code == 204
        tab.page.wait_for_function(
            "() => document.querySelector('#run-state').innerText === 'EMBEDDING'", timeout=15_000
        )
        assert "embedding now" in tab.page.inner_text(".log")
        assert api.put(f"/v1/docker/runs/{rid}", json={"state": "FAILED", "message": "boom"}).status_code == 204
        tab.page.wait_for_function("() => document.querySelector('#run-state').innerText === 'FAILED'", timeout=15_000)
        assert tab.page.locator("#live[hx-trigger]").count() == 0  # an ended run is no longer polled
        assert tab.errors == []
        api.close()


def test_keyboard_walks_from_the_runs_list_to_a_run_and_schedules_one(chromium, site, tmp_path) -> None:
    _b, base, token, s = site
    with signed_in_tab(chromium, base, token, tmp_path, "keyboard") as tab:
        assert tab_to(tab.page, lambda el: el["text"] == "Skip to content")
        assert tab_to(tab.page, lambda el: el["href"] == f"/ui/runs/{s.run_id}")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(f"**/ui/runs/{s.run_id}")
        assert tab_to(tab.page, lambda el: el["href"] == f"/ui/datasets/{s.dataset_id}")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(f"**/ui/datasets/{s.dataset_id}")
        assert tab_to(tab.page, lambda el: el["text"] == "Schedule a run")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(f"**/ui/datasets/{s.dataset_id}/schedule")
        assert tab_to(tab.page, lambda el: el["id"] == "selection")
        tab.page.keyboard.press("Control+A")
        tab.page.keyboard.type('{"strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}')
        assert tab_to(tab.page, lambda el: el["text"] == "Schedule")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_selector("#selection-error")
        assert "n_samples" in tab.page.inner_text("#selection-error")  # beside the field it names
        # the refused form answers 400, which chromium reports on its console: that one is expected
        assert [e for e in tab.errors if "status of 400" not in e] == []
        tab.errors.clear()
        assert tab_to(tab.page, lambda el: el["id"] == "selection")
        tab.page.keyboard.press("Control+A")
        tab.page.keyboard.type(
            '{"n_samples": 3, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}'
        )
        assert tab_to(tab.page, lambda el: el["text"] == "Schedule")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(f"**/ui/datasets/{s.dataset_id}?scheduled=*")
        assert "is waiting for a worker" in tab.page.inner_text("main")
        assert tab.errors == []


def test_embedding_view_draws_the_projection_and_shows_a_sample(chromium, site, tmp_path) -> None:
    _b, base, token, s = site
    with signed_in_tab(chromium, base, token, tmp_path, "embedding") as tab:
        tab.page.goto(f"/ui/runs/{s.run_id}")
        assert tab_to(tab.page, lambda el: el["text"] == "Embedding view")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(f"**/ui/runs/{s.run_id}/embedding")
        # computed once in the background; the page polls until the canvas arrives and draws it
        tab.page.wait_for_function(
            "() => (document.querySelector('canvas.embedding') || {dataset: {}}).dataset.state === 'drawn'",
            timeout=60_000,
        )
        assert tab.page.get_attribute("canvas.embedding", "data-points") == str(len(GALLERY_FILES) + 1)
        assert f"{len(GALLERY_FILES)} selected" in tab.page.inner_text("#embedding-count")
        assert tab_to(tab.page, lambda el: el["id"] == "embedding-canvas")
        tab.page.keyboard.press("ArrowRight")  # the first selected sample
        assert tab.page.inner_text("#embedding-sample figcaption") == f"{SCRIPT_FILE} (selected)"
        tab.page.wait_for_function("() => document.querySelector('#embedding-sample img').naturalWidth === 32")
        box = tab.page.locator("canvas.embedding").bounding_box()
        assert box is not None
        ends = []
        for x in (box["x"] + 12, box["x"] + box["width"] - 12):  # the two ends of the line the samples make
            tab.page.mouse.click(x, box["y"] + box["height"] / 2)
            ends.append(tab.page.inner_text("#embedding-sample figcaption"))
        assert all(ends) and ends[0] != ends[1]
        assert {f"{SCRIPT_FILE} (selected)", "unselected.png"} == set(ends)  # the first and the last sample
        assert tab.dialogs == [] and tab.errors == []
