"""Config paths the worker reads from the Lightly datasource are refused at scheduling when they
could leave it (issue 9.3's second defence; the worker refuses them too, see tests/faults)."""

from __future__ import annotations

import pytest
from conftest import Api
from flows import dataset, ok
from lightly_protocol import paths
from lightly_protocol.validation import datasource_path_problem

BAD = ["/etc/passwd", "../../secret.txt", ".lightly/../../etc/passwd", "C:/x.csv", "a\\b.csv", "s3://bucket/x.csv"]


@pytest.mark.parametrize("path", BAD)
def test_paths_that_leave_the_datasource_are_named_with_what_to_fix(path: str) -> None:
    problem = datasource_path_problem("docker.embeddings", path)
    assert problem and problem.startswith(f"docker.embeddings {path!r} must")


@pytest.mark.parametrize("path", [".lightly/embeddings/e.csv", "embeddings.csv", ".lightly/relevant.txt", None])
def test_paths_inside_the_datasource_are_fine(path: str | None) -> None:
    assert datasource_path_problem("docker.embeddings", path) is None


@pytest.mark.parametrize(
    "docker", [{"embeddings": "/etc/passwd"}, {"relevantFilenamesFile": ".lightly/../../../etc/passwd"}]
)
def test_scheduling_refuses_them_before_any_worker_reads_them(api: Api, docker: dict) -> None:  # type: ignore[type-arg]
    ds = dataset(api)
    selection = {"nSamples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": selection}}
    cid = ok(api.post(paths.CONFIGS, json=body), 201)["id"]
    r = api.post(f"/v1/datasets/{ds}/docker/worker/schedule", json={"configId": cid, "priority": "MID", "runsOn": []})
    assert r.status_code == 400 and "must" in r.json()["error"] and "Lightly datasource" in r.json()["error"], r.text
