"""Unit tests of the shared wire models and config validation (no server)."""

from __future__ import annotations

import pytest
from lightly_protocol.models import DatasourceLocal, RunData, SelectionStrategy, WorkerConfigCreateRequest
from lightly_protocol.validation import config_problems, local_path_problem
from pydantic import ValidationError


def test_wire_form_is_camel_case_without_unset_keys() -> None:
    run = RunData(id="a" * 24, user_id="u", docker_version="1", state="STARTED", created_at=1, last_modified_at=2)
    assert run.wire() == {
        "id": "a" * 24,
        "userId": "u",
        "dockerVersion": "1",
        "state": "STARTED",
        "createdAt": 1,
        "lastModifiedAt": 2,
    }


def test_stopping_condition_minimum_distance_keeps_its_snake_case_wire_name() -> None:
    s = SelectionStrategy.model_validate({"type": "DIVERSITY", "stopping_condition_minimum_distance": 0.2})
    assert s.wire() == {"type": "DIVERSITY", "stopping_condition_minimum_distance": 0.2}


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "A" * 24},  # upper-case hex
        {"createdAt": 1.5},  # float timestamp
        {"state": "started"},  # lower-case enum
        {"extra": 1},  # unknown key
    ],
)
def test_strictness(bad: dict) -> None:
    base = {
        "id": "a" * 24,
        "userId": "u",
        "dockerVersion": "1",
        "state": "STARTED",
        "createdAt": 1,
        "lastModifiedAt": 2,
    }
    with pytest.raises(ValidationError):
        RunData.model_validate(base | bad)


def test_what_the_real_client_sends_is_accepted() -> None:
    body = {
        "version": "V4",
        "creator": "USER_PIP",
        "config": {
            "workerType": "FULL",
            "docker": {"shutdownWhenJobFinished": True, "corruptnessCheck": {"corruptionThreshold": 0.1}},
            "lightly": {"loader": {"batchSize": 16}, "collate": {"inputSize": 64, "rrDegrees": None}},
            "selection": {
                "nSamples": 10,
                "strategies": [
                    {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY", "strength": 1}},
                    {"input": {"type": "RANDOM", "randomSeed": 42}, "strategy": {"type": "WEIGHTS"}},
                ],
                "autoTasks": [],
            },
        },
    }
    req = WorkerConfigCreateRequest.model_validate(body)
    assert config_problems(req.config) == []


def test_semantic_problems_say_what_to_fix() -> None:
    cfg = WorkerConfigCreateRequest.model_validate(
        {
            "version": "V4",
            "config": {
                "workerType": "FULL",
                "docker": {"relevantFilenamesFile": "lists/files.txt"},
                "selection": {
                    "strategies": [
                        {
                            "input": {"type": "METADATA"},
                            "strategy": {"type": "BALANCE", "target": {"a": 0.7, "b": 0.6}},
                        },
                    ]
                },
            },
        }
    ).config
    problems = " | ".join(config_problems(cfg))
    assert "input METADATA needs 'key'" in problems
    assert "sum to at most 1" in problems
    assert "set 'n_samples' or 'proportion_samples'" in problems
    assert "under '.lightly/'" in problems


@pytest.mark.parametrize(("path", "ok"), [("", True), ("images/2024", True), ("/abs", False), ("a/../b", False)])
def test_local_path_rules(path: str, ok: bool) -> None:
    assert (local_path_problem(path) is None) is ok
    DatasourceLocal.model_validate({"purpose": "INPUT", "type": "LOCAL", "fullPath": path})
