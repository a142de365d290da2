"""The web console over plain HTTP against a real server, on SQLite and PostgreSQL: sign-in with API tokens
(revocation included), per-user isolation exactly as the API enforces it, CSRF refusal on every POST, the
security headers, user strings shown as text, no token in any URL, the schedule form's validation."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from console_kit import SCRIPT, SCRIPT_FILE, Console, Seeded, csrf_of, seed

PAGES = ["/ui/runs", "/ui/workers", "/ui/datasets"]


@pytest.fixture(scope="module")
def alice(db_backend, server) -> tuple[str, Seeded]:  # type: ignore[no-untyped-def]
    token = db_backend.token("alice")
    return token, seed(server.url, token, [SCRIPT_FILE, "b.png"])


@pytest.fixture(scope="module")
def bob(db_backend, server) -> tuple[str, Seeded]:  # type: ignore[no-untyped-def]
    token = db_backend.token("bob")
    return token, seed(server.url, token, ["bob.png"], dataset="dogs")


@pytest.fixture
def console(server) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    c = Console(server.url)
    yield c
    c.close()


def signed_in(server, token: str) -> Console:  # type: ignore[no-untyped-def]
    c = Console(server.url)
    r = c.sign_in(token)
    assert r.status_code == 303 and r.headers["location"] == "/ui/runs", r.text
    return c


def seeded_pages(s: Seeded) -> list[str]:
    return [
        *PAGES,
        f"/ui/runs/{s.run_id}",
        f"/ui/runs/{s.run_id}/live",
        f"/ui/datasets/{s.dataset_id}",
        f"/ui/datasets/{s.dataset_id}/tags/{s.tag_id}",
        f"/ui/datasets/{s.dataset_id}/schedule",
    ]


def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie(server, console, alice) -> None:
    for path in [*PAGES, "/ui"]:
        r = console.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login", path
    r = console.sign_in(alice[0])
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "lightly_console_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert alice[0] not in cookie  # the token is sealed, never stored as is
    page = console.get("/ui/runs")
    assert page.status_code == 200 and alice[1].run_id in page.text


def test_a_wrong_token_is_refused_without_echoing_it(console) -> None:
    r = console.sign_in("not-a-token-0123456789")
    assert r.status_code == 401 and "not valid" in r.text and "not-a-token-0123456789" not in r.text
    assert "lightly_console_session" not in r.headers.get("set-cookie", "")


def test_behind_a_tls_proxy_the_cookie_is_secure(server) -> None:
    c = Console(server.url)
    page = c.get("/ui/login")
    r = c.http.post(
        "/ui/login",
        data={"csrf_token": csrf_of(page.text), "token": "wrong-token-xyz"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 401
    assert "Secure" in c.get("/ui/login", headers={"X-Forwarded-Proto": "https"}).headers.get("set-cookie", "Secure")
    c.http.cookies.clear()
    r = c.http.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.headers["set-cookie"]
    c.close()


def test_each_user_sees_only_their_own(server, alice, bob) -> None:
    a, b = signed_in(server, alice[0]), signed_in(server, bob[0])
    try:
        runs_a, runs_b = a.get("/ui/runs").text, b.get("/ui/runs").text
        assert alice[1].run_id in runs_a and bob[1].run_id not in runs_a
        assert bob[1].run_id in runs_b and alice[1].run_id not in runs_b
        assert "cats" in a.get("/ui/datasets").text and "dogs" not in a.get("/ui/datasets").text
        assert "cats-worker" in a.get("/ui/workers").text and "dogs-worker" not in a.get("/ui/workers").text
        for path in seeded_pages(bob[1])[3:]:  # bob's run, dataset, tag: 404 for alice, as the API answers
            assert a.get(path).status_code == 404, path
        run_b = bob[1]
        assert a.get(f"/ui/datasets/{run_b.dataset_id}/samples/{'0' * 24}/image").status_code == 404
        cancel = a.post_form(
            "/ui/runs", f"/ui/datasets/{run_b.dataset_id}/scheduled/{run_b.scheduled_id}/cancel", {"next": "/ui/runs"}
        )
        assert cancel.status_code == 404  # and bob's scheduled run still waits
        assert run_b.scheduled_id in b.get("/ui/runs").text
    finally:
        a.close()
        b.close()


def test_every_post_without_its_csrf_token_is_refused(server, alice) -> None:
    c = signed_in(server, alice[0])
    s = alice[1]
    posts = {
        "/ui/login": {"token": alice[0]},
        "/ui/logout": {},
        f"/ui/datasets/{s.dataset_id}/scheduled/{s.scheduled_id}/cancel": {},
        f"/ui/datasets/{s.dataset_id}/schedule": {"selection": "{}", "docker": "{}", "priority": "MID"},
    }
    for action, fields in posts.items():
        for token in (None, "0" * 64):  # missing, or not this browser's
            data = dict(fields) if token is None else {**fields, "csrf_token": token}
            r = c.http.post(action, data=data)
            assert r.status_code == 403 and "CSRF" in r.text, action
    other = Console(server.url)  # another browser's valid token does not fit this browser's cookie
    foreign = csrf_of(other.get("/ui/login").text)
    assert c.http.post("/ui/logout", data={"csrf_token": foreign}).status_code == 403
    assert s.scheduled_id in c.get("/ui/runs").text  # nothing was canceled
    assert c.get("/ui/runs").status_code == 200  # nor signed out
    other.close()
    c.close()


def test_security_headers_on_every_ui_answer(server, alice) -> None:
    c = signed_in(server, alice[0])
    for path in [*seeded_pages(alice[1]), "/ui/login", "/ui/static/htmx.min.js", "/ui/no-such-page"]:
        h = c.get(path).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer", path
    assert "content-security-policy" not in httpx.get(f"{server.url}/healthz", trust_env=False).headers
    c.close()


def test_user_strings_are_shown_as_text(server, alice, db_backend) -> None:
    from conftest import run_sql

    s = alice[1]
    run_sql(db_backend, "UPDATE tags SET name = :n WHERE id = :i", n=f"tag {SCRIPT}", i=s.tag_id)
    c = signed_in(server, alice[0])
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in seeded_pages(s):
        assert SCRIPT not in c.get(path).text, path
    assert escaped in c.get(f"/ui/runs/{s.run_id}").text  # the run's message and log line
    gallery = c.get(f"/ui/datasets/{s.dataset_id}/tags/{s.tag_id}").text
    assert f"x{escaped}.png" in gallery and f"tag {escaped}" in gallery
    assert f"tag {escaped}" in c.get(f"/ui/datasets/{s.dataset_id}").text
    c.close()


def test_no_token_in_any_url_or_log_line(db_backend, alice) -> None:
    token = alice[0]
    server = db_backend.start_server("--log-level", "debug")  # everything the server logs (no access log: cli.py)
    c = signed_in(server, token)
    for path in seeded_pages(alice[1]):
        r = c.get(path)
        assert token not in r.text and token not in str(r.url), path
        for url in re.findall(r'(?:href|src|action|hx-get)="([^"]*)"', r.text):
            assert "token" not in url.lower(), (path, url)
    c.post_form("/ui/runs", "/ui/logout", {})
    c.close()
    log = server.log()
    assert "Application startup complete" in log  # the log is written
    assert token not in log
    server.stop()


def test_artifact_and_thumbnail_go_through_signed_urls_without_a_token(server, alice) -> None:
    s = alice[1]
    c = signed_in(server, alice[0])
    image = c.get(f"/ui/datasets/{s.dataset_id}/samples/{'0' * 24}/image")
    assert image.status_code == 303
    assert image.headers["location"].startswith(f"/v1/datasets/{s.dataset_id}/samples/")
    assert "signature=" in image.headers["location"] and "token" not in image.headers["location"]
    c.close()


def test_revoked_token_ends_the_console_session(server, db_backend) -> None:
    token = db_backend.token("carol")
    c = signed_in(server, token)
    assert c.get("/ui/runs").status_code == 200
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lightly_server.cli",
            "revoke-token",
            "--database",
            db_backend.database_url,
            "--token-file",
            "-",
        ],
        input=token,
        text=True,
        check=True,
        capture_output=True,
    )
    import time

    deadline = time.monotonic() + 15  # the token cache's TTL bounds it (auth.TOKEN_TTL_S)
    while c.get("/ui/runs").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert c.get("/ui/runs").status_code == 303
    c.close()


def test_sign_out_drops_the_session(server, alice) -> None:
    c = signed_in(server, alice[0])
    r = c.post_form("/ui/runs", "/ui/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert c.get("/ui/runs").status_code == 303
    c.close()


def test_a_copy_of_a_signed_out_session_cookie_is_refused(server, alice) -> None:
    """Sign-out is recorded by the server (the cookie's digest until it would expire): a copy of the cookie,
    taken before, no longer opens the console; a session signed in afterwards with the same token does."""
    c = signed_in(server, alice[0])
    copied = c.http.cookies.get("lightly_console_session")
    assert copied and c.get("/ui/runs").status_code == 200
    thief = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False, trust_env=False)
    thief.cookies.set("lightly_console_session", copied, path="/ui")
    assert thief.get("/ui/runs").status_code == 200  # the copy works while the session lasts
    assert c.post_form("/ui/runs", "/ui/logout", {}).status_code == 303
    r = thief.get("/ui/runs")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    again = signed_in(server, alice[0])
    assert again.get("/ui/runs").status_code == 200
    for client in (c, thief, again):
        client.close()


def test_cancel_a_waiting_scheduled_run(server, db_backend) -> None:
    token = db_backend.token()
    s = seed(server.url, token, ["a.png"], dataset="birds")
    c = signed_in(server, token)
    assert s.scheduled_id in c.get("/ui/runs").text
    action = f"/ui/datasets/{s.dataset_id}/scheduled/{s.scheduled_id}/cancel"
    r = c.post_form("/ui/runs", action, {"next": f"/ui/datasets/{s.dataset_id}"})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/datasets/{s.dataset_id}"
    assert s.scheduled_id not in c.get("/ui/runs").text
    again = c.post_form("/ui/runs", action, {})
    assert again.status_code == 409 and "only OPEN runs can be canceled" in again.text
    c.close()


def test_runs_filter_and_page(server, alice) -> None:
    c = signed_in(server, alice[0])
    s = alice[1]
    assert s.run_id in c.get("/ui/runs", params={"state": "COMPLETED"}).text
    assert s.run_id not in c.get("/ui/runs", params={"state": "FAILED"}).text
    assert s.run_id in c.get("/ui/runs", params={"dataset": s.dataset_id}).text
    assert s.run_id not in c.get("/ui/runs", params={"worker": s.worker_id}).text  # no worker ran it
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    assert s.run_id in c.get("/ui/runs", params={"since": str(today), "until": str(today)}).text
    assert s.run_id not in c.get("/ui/runs", params={"since": str(today + dt.timedelta(days=1))}).text
    assert s.run_id not in c.get("/ui/runs", params={"until": str(today - dt.timedelta(days=1))}).text
    paged = c.get("/ui/runs", params={"since": str(today), "state": "COMPLETED"}).text
    assert s.run_id in paged and f'value="{today}"' in paged  # the filter form keeps what was asked
    late = c.get("/ui/runs", params={"since": "yesterday"})
    assert late.status_code == 400 and "is not a date: use YYYY-MM-DD" in late.text
    bad = c.get("/ui/runs", params={"state": "<b>"})
    assert bad.status_code == 400 and "is not a run state" in bad.text and "<b>" not in bad.text
    page = c.get(f"/ui/runs/{s.run_id}").text
    for stage in ("STARTED", "EMBEDDING", "SAMPLING"):
        assert f"<td>{stage}</td>" in page
    c.close()


def test_schedule_form_validates_as_the_api_and_shows_errors_by_field(server, alice) -> None:
    c = signed_in(server, alice[0])
    s = alice[1]
    form = f"/ui/datasets/{s.dataset_id}/schedule"
    page = c.get(form).text
    assert "DIVERSITY" in page and "TYPICALITY" in page  # the recommended defaults
    no_size = '{"strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}'
    bad = c.post_form(form, form, {"selection": no_size, "docker": "{}", "priority": "MID"})
    assert bad.status_code == 400
    assert re.search(r'id="selection-error"[^>]*>.*n_samples', bad.text, re.S)  # config_problems, beside the field
    wrong = c.post_form(form, form, {"selection": "{", "docker": '{"nope": 1}', "priority": "SOON"})
    assert wrong.status_code == 400
    assert "not valid JSON" in wrong.text
    assert 'id="priority-error"' in wrong.text
    ok_fields = {
        "selection": '{"n_samples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, '
        '"strategy": {"type": "DIVERSITY"}}]}',
        "docker": "{}",
        "priority": "HIGH",
        "runs_on": "gpu",
    }
    ok = c.post_form(form, form, ok_fields)
    assert ok.status_code == 303
    sid = ok.headers["location"].rsplit("=", 1)[1]
    listed = httpx.get(
        f"{server.url}/v1/datasets/{s.dataset_id}/docker/worker/schedule", params={"token": alice[0]}, trust_env=False
    ).json()
    mine = next(x for x in listed if x["id"] == sid)
    assert mine["priority"] == "HIGH" and mine["runsOn"] == ["gpu"]
    c.close()


def test_workers_page_shows_the_run_a_worker_holds_and_its_lightlyworker(server, db_backend) -> None:
    from lightly_protocol import paths
    from lightly_protocol.names import k8s_worker_name

    token = db_backend.token()
    s = seed(server.url, token, ["a.png"], dataset="fish")
    api = httpx.Client(base_url=server.url, params={"token": token}, trust_env=False, timeout=30)
    name = k8s_worker_name("prod", "ml-team", "fleet-a", 0)
    wid = api.post(paths.WORKERS, json={"name": name, "labels": []}).json()["id"]
    claim = api.put(paths.scheduled_run(s.dataset_id, wid, s.scheduled_id), json={"state": "LOCKED"})
    assert claim.status_code == 204, claim.text
    run = api.post(paths.RUNS, json={"dockerVersion": "2.0.0", "scheduledId": s.scheduled_id}).json()["id"]
    c = signed_in(server, token)
    page = c.get("/ui/workers").text
    row = page[page.index(f'id="worker-{wid}"') :].split("</tr>", 1)[0]
    assert run in row and "STARTED" in row
    assert "LightlyWorker ml-team/fleet-a, replica 0, pod fleet-a-0-" in row and "cluster prod" in row
    run_page = c.get(f"/ui/runs/{run}").text
    assert name in run_page and "cannot be canceled" in run_page  # a LOCKED run is not canceled by the API
    assert run in c.get("/ui/runs", params={"worker": wid}).text
    c.close()
    api.close()


def test_embedding_view_projects_the_runs_embeddings_once(server, alice, bob) -> None:
    import time

    s = alice[1]
    c = signed_in(server, alice[0])
    deadline = time.monotonic() + 60
    while "<canvas" not in (page := c.get(f"/ui/runs/{s.run_id}/embedding").text):
        assert "Computing the projection" in page and time.monotonic() < deadline
        time.sleep(0.5)
    doc = c.get(f"/ui/runs/{s.run_id}/embedding.json").json()
    # the kit's CSV puts sample i at (i, 2i, 0): a line, so x is 0, 0.5, 1 (or reversed) and y constant
    assert doc["names"] == [SCRIPT_FILE, "b.png", "unselected.png"]
    assert sorted(doc["x"]) == [0.0, 0.5, 1.0] and len(set(doc["y"])) == 1
    assert doc["selected"] == [1, 1, 0]  # the run's tag
    assert doc["ids"][:2] == ["0" * 24, "0" * 23 + "1"] and doc["ids"][2] is None  # not a sample of the dataset
    assert doc["imageBase"] == f"/ui/datasets/{s.dataset_id}/samples/"
    b = signed_in(server, bob[0])
    assert b.get(f"/ui/runs/{s.run_id}/embedding.json").status_code == 404  # another user's run
    assert b.get(f"/ui/runs/{s.run_id}/embedding").status_code == 404
    b.close()
    c.close()


def test_embedding_view_of_a_run_without_embeddings_says_so(server, db_backend) -> None:
    token = db_backend.token()
    api = httpx.Client(base_url=server.url, params={"token": token}, trust_env=False, timeout=30)
    rid = api.post("/v1/docker/runs", json={"dockerVersion": "1.0.0"}).json()["id"]
    c = signed_in(server, token)
    page = c.get(f"/ui/runs/{rid}/embedding")
    assert page.status_code == 200 and "uploaded no <code>data/embeddings.csv</code>" in page.text
    assert c.get(f"/ui/runs/{rid}/embedding.json").status_code == 404
    c.close()
    api.close()
