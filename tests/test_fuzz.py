"""Schemathesis against the live server (SQLite and PostgreSQL): every operation of /openapi.json, with a
valid token, on real and on generated ids, schema-valid and schema-breaking input (issue 9).

Asserts no 5xx at all, and that every answer conforms to the document: its status is documented, its
content type too, and its body matches the documented schema. Bounded: ``LIGHTLY_FUZZ_EXAMPLES`` cases
per operation and kind (default 8), derandomised, no shrinking.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis  # the [test] extra; a missing one is an error, not a skip
from conftest import Api, Backend, ServerProcess
from flows import config, dataset, lock, ok, register, run_state, schedule, start_run
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from lightly_protocol import paths
from lightly_protocol.shards import encode_listing
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("LIGHTLY_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: uvicorn's answer to a request line its HTTP parser refuses (e.g. raw control characters a generated query
#: carries): a 400 in plain text before any route runs, which no OpenAPI operation can describe. Such cases
#: are counted, not checked against the schema; any other answer is checked.
UNPARSABLE = "Invalid HTTP request received."


@pytest.fixture(scope="module")
def fuzz_server(db_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    key = tmp_path_factory.mktemp("fuzzkey") / "secret.key"
    key.write_text(secrets.token_urlsafe(48))
    # short long-polls: a generated waitSeconds must not hold a case for a minute
    return db_backend.start_server("--secret-key-file", str(key), "--max-wait-seconds", "0.05")


def _seed(api: Api) -> dict[str, str]:
    """Real objects, so that cases also reach the code behind the 404s."""
    wid = register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(lock(api, ds, wid, sid), 204)
    rid = start_run(api, ds, sid)
    created = ok(api.post(f"/v1/docker/runs/{rid}/artifacts", json={"fileName": "log.txt", "type": "LOG"}), 201)
    ok(httpx.put(created["signedWriteUrl"], content=b"log", timeout=30))
    ok(api.put(f"/v1/docker/runs/{rid}/artifacts/{created['artifactId']}/confirmUpload"), 204)
    ok(api.put(f"/v1/docker/runs/{rid}/selection", json={"filenames": ["a.jpg", "b.jpg"]}), 204)
    run_state(api, rid, "COMPLETED")
    (tag,) = [t for t in ok(api.get(f"/v1/datasets/{ds}/tags")) if t["name"] != "initial-tag"]
    ds2 = dataset(api)  # a second dataset with an OPEN run and a LOCKED one for the schedule endpoints
    sid2 = schedule(api, ds2, cid)
    rid2 = start_run(api, ds2, sid2) if lock(api, ds2, wid, sid2).status_code == 204 else rid
    # shards of the LOCKED run (extension, /v1/ext/): one DONE with a result, the others OPEN
    shard_query = {"workerId": wid, "runId": rid2, "shardSize": 1}
    ok(api.put(paths.scheduled_shards(sid2), params=shard_query, content=encode_listing(["a.jpg", "b.jpg", "c.jpg"])))
    done = ok(api.post(paths.scheduled_shards_claim(sid2), params={"workerId": wid}))["shard"]["id"]
    ok(api.put(paths.shard_result(done), params={"workerId": wid}, content=b"result"))
    # an embedding (created, no CSV yet) of the seeded dataset, for the embeddings endpoints
    embedding = ok(api.get(paths.embeddings_write_url(ds2), params={"name": "seeded"}))["embeddingId"]
    return {
        "embeddingId": embedding,
        "sampleId": "0" * 24,
        "workerId": wid,
        "datasetId": ds2,
        "configId": cid,
        "scheduledId": sid2,
        "runId": rid2,
        "artifactId": created["artifactId"],
        "tagId": tag["id"],
        "datasetName": "ds",
        "shardId": done,
    }


def test_fuzz_the_api(fuzz_server: ServerProcess, db_backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    token = db_backend.token()
    api = Api(fuzz_server.url, token)
    real = _seed(api)
    raw = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    session = requests.Session()
    session.trust_env = False  # no proxies: the server is on loopback
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    unparsable: list[str] = []
    cases = 0
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        fixed_query = {"token": token}
        names = {p.name for p in op.path_parameters}
        ids = {k: v for k, v in real.items() if k in names}
        strategy = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE, query=fixed_query, path_parameters=ids or None),
            op.as_strategy(GenerationMode.POSITIVE, query=fixed_query),
            op.as_strategy(GenerationMode.NEGATIVE, query=fixed_query, path_parameters=ids or None),
        )

        @settings(
            max_examples=EXAMPLES * 3,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal cases
            cases += 1
            response = case.call(base_url=fuzz_server.url, session=session, timeout=30)
            statuses[response.status_code] += 1
            if response.status_code == 400 and response.text == UNPARSABLE:
                unparsable.append(case.operation.label)  # refused by the HTTP layer: never reached the API
                return
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of failed checks
                summary = str(exc).strip().splitlines()
                failures.append(
                    f"{case.operation.label}: {response.status_code} {summary[:1]} "
                    f"(query {case.query!r:.200}, body {case.body!r:.200}, answer {response.text[:300]!r})"
                )

        run()
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    figures = (
        f"fuzz [{db_backend.kind}]: {operations} operations, {cases} cases, statuses {dict(sorted(statuses.items()))}, "
        f"5xx: {server_errors}, non-conforming: {len(failures)}, refused by the HTTP parser: {len(unparsable)}"
    )
    with capsys.disabled():
        print("\n" + figures)
    Path(db_backend.tmp / "fuzz-figures.txt").write_text(figures + "\n")
    assert server_errors == 0 and not failures, figures + "\n" + "\n".join(sorted(set(failures))[:40])
    assert fuzz_server.proc.poll() is None
