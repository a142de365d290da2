"""The web console's pure parts, computed by hand: progress, stage timings, durations, the session cookie and
CSRF tokens, the schedule form's field mapping, operator worker names, a tag's set bits."""

from __future__ import annotations

import json
import time

import pytest
from lightly_protocol.names import k8s_worker_name
from lightly_server.console.run_view import STAGES, progress_percent, run_duration_ms, stage_timings
from lightly_server.console.schedule import FieldErrors, build_requests, field_of
from lightly_server.console.session import SessionKeys
from lightly_server.console.workers import operator_ref
from lightly_server.store.browse import _set_bits


def test_progress_runs_along_the_stages_and_is_full_at_any_end() -> None:
    assert progress_percent("STARTED") == 0
    assert progress_percent(STAGES[len(STAGES) // 2]) == round(100 * (len(STAGES) // 2) / len(STAGES))
    assert progress_percent("FAILED") == 100 and progress_percent("COMPLETED") == 100
    assert progress_percent("NOT_A_STATE") == 0


def test_duration_is_until_now_while_running_and_until_the_end_after() -> None:
    assert run_duration_ms("EMBEDDING", 1_000, 5_000, 9_000) == 8_000
    assert run_duration_ms("COMPLETED", 1_000, 5_000, 9_000) == 4_000


def _e(ts: int, state: str) -> str:
    return json.dumps({"ts": ts, "state": state, "msg": "x", "level": "INFO"})


def test_stage_timings_from_state_changes_in_the_log() -> None:
    log = [_e(100, "STARTED"), _e(150, "STARTED"), _e(400, "EMBEDDING"), _e(1000, "SAMPLING")]
    running = stage_timings(log, "SAMPLING", 1200, 5000)
    assert [(s.state, s.started_at, s.duration_ms) for s in running] == [
        ("STARTED", 100, 300),
        ("EMBEDDING", 400, 600),
        ("SAMPLING", 1000, None),  # still in it
    ]
    ended = stage_timings(log, "COMPLETED", 1800, 5000)
    assert ended[-1].duration_ms == 800  # the last stage lasted until the run ended
    assert stage_timings([], "STARTED", 0, 0) == []


def test_a_session_cookie_opens_only_with_its_key_and_not_when_tampered() -> None:
    keys = SessionKeys(b"k" * 32)
    cookie = keys.seal("my-token")
    assert "my-token" not in cookie
    assert keys.open(cookie) == "my-token"
    assert SessionKeys(b"j" * 32).open(cookie) is None  # another server's key
    assert keys.open(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    assert keys.open(None) is None and keys.open("é") is None


def test_a_session_cookie_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = SessionKeys(b"k" * 32)
    cookie = keys.seal("t")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 13 * 3600)  # past SESSION_TTL_S (12 h)
    assert keys.open(cookie) is None


def test_csrf_token_belongs_to_one_browser_secret() -> None:
    keys = SessionKeys(b"k" * 32)
    token = keys.csrf_token("browser-a")
    assert keys.csrf_ok("browser-a", token)
    assert not keys.csrf_ok("browser-b", token)
    assert not keys.csrf_ok(None, token) and not keys.csrf_ok("browser-a", None) and not keys.csrf_ok("browser-a", "")


def test_problems_land_beside_the_field_they_name() -> None:
    assert field_of("selection.strategies[0]: strategy X") == "selection"
    assert field_of("docker.relevant_filenames_file must be") == "docker"
    assert field_of("priority: Input should be 'LOW'") == "priority"
    assert field_of("runsOn.0: String should") == "runs_on"
    assert field_of("the dataset has no INPUT datasource") == "general"


DIVERSITY = '[{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]'


def test_the_form_is_checked_by_the_api_models_and_config_problems() -> None:
    good = {
        "selection": f'{{"n_samples": 5, "strategies": {DIVERSITY}}}',
        "docker": "{}",
        "priority": "LOW",
        "runs_on": " gpu , a100 ",
    }
    config, scheduled = build_requests(good)
    assert config.config.selection is not None and config.config.selection.n_samples == 5
    assert scheduled.priority == "LOW" and scheduled.runs_on == ["gpu", "a100"]
    with pytest.raises(FieldErrors) as err:
        build_requests(
            {
                **good,
                "selection": '{"n_samples": 5, "strategies": [{"input": {"type": "EMBEDDINGS"}, '
                '"strategy": {"type": "THRESHOLD"}}]}',
                "priority": "NOW",
            }
        )
    assert any("THRESHOLD" in p for p in err.value.errors["selection"])
    assert list(err.value.errors) == ["selection", "priority"]
    with pytest.raises(FieldErrors) as err:
        build_requests({**good, "docker": "[1,"})
    assert list(err.value.errors) == ["docker"] and "not valid JSON" in err.value.errors["docker"][0]


def test_operator_worker_names_name_their_lightlyworker() -> None:
    name = k8s_worker_name("prod", "ml-team", "fleet.a", 2)
    assert operator_ref(name) == {
        "cluster": "prod",
        "namespace": "ml-team",
        "name": "fleet.a",
        "index": 2,
        "pod": "fleet.a-2-…",
    }
    assert operator_ref("my-laptop-worker") is None
    assert operator_ref("k8s_prod_garbage") is None


def test_set_bits_of_a_mask() -> None:
    assert _set_bits(bytes([0b0000_0101, 0, 0b1000_0000])) == [0, 2, 23]
    assert _set_bits(b"") == []
