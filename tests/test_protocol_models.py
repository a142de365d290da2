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


# The rows of lightly_api_field_patterns.tsv whose model this protocol has: (our model, wire key, pattern).
# Patterns of models we do not serve (V2/V3 configs, scores, predictions, tag arithmetics) are left out.
_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9 _-]+$"
_TAG = r"^[a-zA-Z0-9][a-zA-Z0-9 .:;=@_-]+$"
_TASK = r"^[a-zA-Z0-9_+=,.@:\/-]*$"
_URL = r"^https?:\/\/.+$"
_KMS = r"^arn:aws:kms:[a-zA-Z0-9-]*:[0-9]{12}:key.+$"
FIELD_PATTERNS = [
    ("WorkerCreateRequest", "name", _NAME),  # CreateDockerWorkerRegistryEntryRequest
    ("DatasetCreateRequest", "name", _NAME),
    ("DatasetData", "name", _NAME),
    ("DatasourceLocal", "webServerLocation", _URL),
    ("DatasourceOBS", "obsEndpoint", _URL),
    ("DatasourceS3", "s3ServerSideEncryptionKMSKey", _KMS),
    ("DatasourceS3DelegatedAccess", "s3ARN", r"^arn:aws:iam::[0-9]{12}:role.+$"),
    ("DatasourceS3DelegatedAccess", "s3ExternalId", r"^[a-zA-Z0-9_+=,.@:\/-]+$"),
    ("DatasourceS3DelegatedAccess", "s3ServerSideEncryptionKMSKey", _KMS),
    ("DockerTraining", "taskName", _TASK),  # DockerWorkerConfigV3DockerTraining
    ("AutoTaskTiling", "name", _TASK),  # AutoTaskBase
    ("SelectionInput", "task", _TASK),  # SelectionConfigV4EntryInput
    ("SelectionInput", "score", _TASK),
    ("SelectionInput", "tagName", _TAG),
    ("RunSelectionRequest", "tagName", _TAG),  # our extension, named like a tag
    ("TagData", "name", _TAG),
    ("TagData", "bitMaskData", r"^0x[a-f0-9]+$"),
]


def _patterns(schema: dict) -> set[str]:  # type: ignore[type-arg]
    found = {schema["pattern"]} if "pattern" in schema else set()
    for sub in schema.get("anyOf", []):
        found |= _patterns(sub)
    return found


@pytest.mark.parametrize(("model", "key", "pattern"), FIELD_PATTERNS, ids=[f"{m}.{k}" for m, k, _ in FIELD_PATTERNS])
def test_every_protocol_pattern_is_declared(model: str, key: str, pattern: str) -> None:
    from lightly_protocol import models

    schema = getattr(models, model).model_json_schema(by_alias=True)
    assert pattern in _patterns(schema["properties"][key])


def test_worker_names_in_answers_follow_the_pattern_or_the_old_operator_scheme() -> None:
    from lightly_protocol.models import WorkerData

    row = {
        "id": "a" * 24,
        "userId": "u",
        "workerType": "FULL",
        "state": "IDLE",
        "createdAt": 1,
        "lastModifiedAt": 1,
        "labels": [],
    }
    for good in ("worker-1", "k8s_c_ml_f__v2_0", "my worker", "k8s.c.ml.f.v2.0"):
        WorkerData.model_validate({**row, "name": good})
    for bad in ("w.1", "-worker", "ab", "k8s.c.ML.f.0", "k8s.c.ml.f.x"):
        with pytest.raises(ValidationError, match="should match pattern"):
            WorkerData.model_validate({**row, "name": bad})
