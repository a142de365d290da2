"""Datasource credentials: write-only, sealed at rest with a key kept outside the database (issue 9, item 9)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Api, Backend, ServerProcess, run_sql
from flows import ok
from lightly_server.crypto import REDACTED, SEALED, Keyring, load_keys
from lightly_server.schema import datasources
from sqlalchemy import create_engine, select

S3 = {
    "purpose": "INPUT",
    "type": "S3",
    "fullPath": "s3://bucket/images",
    "s3Region": "eu-central-1",
    "s3AccessKeyId": "AKIAEXAMPLE0SECRETID",
    "s3SecretAccessKey": "s3-secret/with+chars-1234",
}
WITH_SECRETS = [
    S3,
    {
        "purpose": "LIGHTLY",
        "type": "GCS",
        "fullPath": "gs://gcs-bucket/x",
        "gcsProjectId": "p1",
        "gcsCredentials": '{"k": "gcs-secret-5678"}',
    },
    {
        "purpose": "INPUT",
        "type": "AZURE",
        "fullPath": "container/x",
        "accountName": "acct",
        "accountKey": "azure-secret-9999",
    },
    {
        "purpose": "INPUT_OUTPUT",
        "type": "OBS",
        "fullPath": "obs://obs-bucket/x",
        "obsEndpoint": "https://obs.example.com",
        "obsAccessKeyId": "obs-id-secret-1111",
        "obsSecretAccessKey": "obs-secret-2222",
    },
]
SECRET_VALUES = ["AKIAEXAMPLE0SECRETID", "s3-secret/with+chars-1234", "gcs-secret-5678", "azure-secret-9999",
                 "obs-id-secret-1111", "obs-secret-2222"]  # fmt: skip


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("key") / "secret.key"
    p.write_text(secrets.token_urlsafe(48) + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def keyed(db_backend: Backend, key_file: Path) -> ServerProcess:
    return db_backend.start_server("--secret-key-file", str(key_file))


@pytest.fixture
def kapi(keyed: ServerProcess, db_backend: Backend):
    a = Api(keyed.url, db_backend.token())
    yield a
    a.http.close()


def _dataset(api: Api) -> str:
    return ok(api.post("/v1/datasets", json={"name": f"ds-{secrets.token_hex(4)}"}), 201)["id"]


def _stored(db_backend: Backend, dataset_id: str) -> list[str]:
    engine = create_engine(db_backend.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(select(datasources.c.config).where(datasources.c.dataset_id == dataset_id)).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("body", WITH_SECRETS, ids=[b["type"] for b in WITH_SECRETS])
def test_credentials_are_never_returned_nor_stored_in_plain_text(kapi: Api, db_backend: Backend, body: dict) -> None:
    ds = _dataset(kapi)
    ok(kapi.put(f"/v1/datasets/{ds}/datasource", json=body), 204)
    answers = kapi.get(f"/v1/datasets/{ds}/datasource").text + kapi.get(f"/v1/datasets/{ds}/datasource/all").text
    got = kapi.get(f"/v1/datasets/{ds}/datasource", params={"purpose": body["purpose"]}).json()
    for value in SECRET_VALUES:
        assert value not in answers
    assert {k for k, v in got.items() if v == REDACTED} == {k for k in body if "ecret" in k or k in (
        "s3AccessKeyId", "obsAccessKeyId", "accountKey", "gcsCredentials")}  # fmt: skip
    assert got["fullPath"] == body["fullPath"]
    (stored,) = _stored(db_backend, ds)
    for value in SECRET_VALUES:
        assert value not in stored
    assert SEALED in json.loads(stored)


def test_the_real_client_reads_redacted_credentials(kapi: Api, lightly_env: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lightly.api import ApiWorkflowClient

    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", kapi.base)
    client = ApiWorkflowClient(token=kapi.token)
    client.create_dataset("s3-dataset")
    client.set_s3_config(
        resource_path="s3://my-bucket/path/to/data",
        region="eu-central-1",
        access_key="AKIAEXAMPLE",
        secret_access_key="secret/with+chars",
        thumbnail_suffix=None,
    )
    with pytest.warns(DeprecationWarning):
        src = client.get_datasource().actual_instance
    assert (src.type, src.purpose, src.full_path, src.s3_region) == (
        "S3",
        "INPUT_OUTPUT",
        "s3://my-bucket/path/to/data",
        "eu-central-1",
    )
    assert src.s3_secret_access_key == REDACTED and src.s3_access_key_id == REDACTED


def test_redacted_sent_back_keeps_the_stored_credential(kapi: Api, db_backend: Backend, key_file: Path) -> None:
    ds = _dataset(kapi)
    ok(kapi.put(f"/v1/datasets/{ds}/datasource", json=S3), 204)
    answered = ok(kapi.get(f"/v1/datasets/{ds}/datasource"))
    answered.pop("id")
    ok(kapi.put(f"/v1/datasets/{ds}/datasource", json={**answered, "fullPath": "s3://bucket/other"}), 204)
    (stored,) = _stored(db_backend, ds)
    opened = Keyring(load_keys(key_file)).open(json.loads(stored)[SEALED])
    assert opened == {"s3AccessKeyId": S3["s3AccessKeyId"], "s3SecretAccessKey": S3["s3SecretAccessKey"]}
    # REDACTED with nothing stored to stand for: refused
    ds2 = _dataset(kapi)
    r = kapi.put(f"/v1/datasets/{ds2}/datasource", json={**S3, "s3SecretAccessKey": REDACTED})
    assert r.status_code == 400 and "send the credential itself" in r.json()["error"]


def test_without_a_key_credentials_are_refused_clearly(api: Api) -> None:
    ds = _dataset(api)
    r = api.put(f"/v1/datasets/{ds}/datasource", json=S3)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"code", "error"}
    assert "--secret-key-file" in r.json()["error"] and "LIGHTLY_SERVER_SECRET_KEY" in r.json()["error"]
    assert api.get(f"/v1/datasets/{ds}/datasource").status_code == 404
    ok(api.put(f"/v1/datasets/{ds}/datasource", json={"purpose": "INPUT", "type": "LOCAL", "fullPath": ""}), 204)


def test_no_signing_key_in_the_database(kapi: Api, server: ServerProcess, db_backend: Backend) -> None:
    rows = run_sql(db_backend, "SELECT key, value FROM server_settings")
    assert [k for k, _ in rows if "sign" in k or "key" in k] == []


def test_plain_credentials_of_older_servers_are_sealed_on_start(
    kapi: Api, db_backend: Backend, key_file: Path, keyed: ServerProcess
) -> None:
    ds = _dataset(kapi)
    plain = {**S3, "id": "a" * 24}
    run_sql(
        db_backend,
        "INSERT INTO datasources (id, dataset_id, purpose, config, created_at) VALUES (:id, :ds, 'INPUT', :c, 0)",
        id=secrets.token_hex(12),
        ds=ds,
        c=json.dumps(plain),
    )
    # an older server also kept its URL signing key in plain text
    run_sql(db_backend, "DELETE FROM server_settings WHERE key = 'artifact_signing_key'")
    run_sql(db_backend, "INSERT INTO server_settings (key, value) VALUES ('artifact_signing_key', :v)", v="ab" * 32)
    second = db_backend.start_server("--secret-key-file", str(key_file))
    try:
        (stored,) = _stored(db_backend, ds)
        assert S3["s3SecretAccessKey"] not in stored and SEALED in json.loads(stored)
        assert run_sql(db_backend, "SELECT key FROM server_settings WHERE key = 'artifact_signing_key'") == []
        got = ok(Api(second.url, kapi.token).get(f"/v1/datasets/{ds}/datasource"))
        assert got["s3SecretAccessKey"] == REDACTED
    finally:
        second.stop()


def test_a_too_short_key_stops_the_server_with_a_clear_error(tmp_path: Path, db_backend: Backend) -> None:
    bad = tmp_path / "short.key"
    bad.write_text("tooshort\n")
    out = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "serve", "--database", db_backend.database_url,
         "--secret-key-file", str(bad), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "at least 32" in out.stderr and "generate-secret-key" in out.stderr
    gen = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "generate-secret-key"], capture_output=True, text=True, timeout=60
    )
    assert gen.returncode == 0 and len(gen.stdout.strip()) >= 32


def test_key_rotation_and_sources(tmp_path: Path) -> None:
    old, new = secrets.token_urlsafe(40), secrets.token_urlsafe(40)
    sealed = Keyring([old.encode()]).seal({"s3SecretAccessKey": "x"})
    rotated = tmp_path / "rotated.key"
    rotated.write_text(f"# current first\n{new}\n{old}\n")
    ring = Keyring(load_keys(rotated, env={}))
    assert ring.open(sealed) == {"s3SecretAccessKey": "x"}  # the old key still opens what it sealed
    assert ring.url_key == Keyring([new.encode()]).url_key != Keyring([old.encode()]).url_key
    assert load_keys(None, env={"LIGHTLY_SERVER_SECRET_KEY": new}) == [new.encode()]
    assert load_keys(None, env={"LIGHTLY_SERVER_SECRET_KEY_FILE": str(rotated)}) == [new.encode(), old.encode()]
    assert load_keys(None, env={}) == []
    with pytest.raises(ValueError, match="cannot read"):
        load_keys(tmp_path / "missing.key", env={})
    from lightly_server.errors import ApiError

    with pytest.raises(ApiError, match="sealed with a key this server does not have"):
        Keyring([new.encode()]).open(sealed)
