"""Bucket datasources end to end: the unmodified lightly==1.5.26 client against the real server, which
lists and signs for real object stores (moto's S3 server, gcp-storage-emulator, Azurite: tests/bucket_stores.py).

Per store (S3, OBS, GCS, AZURE): the client's ``set_*_config``, a listing with keys with spaces, non-ASCII
and deep prefixes (hostile keys skipped, ``.lightly/`` left out), read URLs that fetch the bytes (and a
Range), write URLs that upload, the metadata and predictions listings, ``list_datasource_permissions()``
and processedUntilTimestamp. Then: paging with cursors, relevant filenames, wrong keys and missing buckets
(the provider's message naming the datasource), a throttling store (503 SlowDown: retried, bounded, then
429), scheduling refused for an unreadable datasource (and ``bypass_verify``), S3DelegatedAccess through
STS, other users' datasets, and presigned URLs that are tampered with or expired (refused by Azurite; moto
and the GCS emulator do not check signatures: docs/server.md says so).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from bucket_stores import Stores, server, server_log, stores  # noqa: F401  (fixtures)
from conftest import Api, Backend
from lightly_protocol import paths

#: the files every store gets (relative to the datasource root), and keys the listing must skip
GOOD = ["a.jpg", "sub dir/space name.png", "ünïcödé/ファイル.jpg", "deep/1/2/3/4/5/6/7/8/leaf.jpg"]
HOSTILE = ["../escape.jpg", "ctl\x01char.jpg", "x/../../up.jpg"]
LIGHTLY_FILES = [".lightly/metadata/a.json", ".lightly/embeddings/e.csv"]
ROOT = "data root/in"


def _payload(name: str) -> bytes:
    return f"content of {name}".encode()


@dataclass
class Store:
    """One datasource type on its store: how to seed files and how the client configures it."""

    kind: str
    bucket: str
    put: Callable[[str, bytes], None]
    configure: Callable[[Any, str, str], None]  # (client, prefix, purpose)
    put_headers: dict[str, str]


def _s3_client(url: str, key: str = "AKID", secret: str = "SECRET") -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret
    )


def _make_store(kind: str, all_stores: Stores, bucket: str) -> Store:
    octet = {"Content-Type": "application/octet-stream"}
    if kind in ("S3", "OBS"):
        s3 = all_stores.need("s3")
        c = _s3_client(s3.url)
        c.create_bucket(Bucket=bucket)

        def put(key: str, data: bytes) -> None:
            c.put_object(Bucket=bucket, Key=key, Body=data)

        if kind == "S3":

            def configure(client: Any, prefix: str, purpose: str) -> None:
                client.set_s3_config(f"s3://{bucket}/{prefix}", "us-east-1", "AKID", "SECRET", purpose=purpose)
        else:

            def configure(client: Any, prefix: str, purpose: str) -> None:
                client.set_obs_config(f"obs://{bucket}/{prefix}", s3.url, "AKID", "SECRET", purpose=purpose)

        return Store(kind, bucket, put, configure, octet)
    if kind == "GCS":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from lightly_devkit.stores import gcs_service_account

        gcs = all_stores.need("gcs")
        g = storage.Client(project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs.url})
        b = g.create_bucket(bucket)
        key_json = gcs_service_account()

        def gput(key: str, data: bytes) -> None:
            b.blob(key).upload_from_string(data)

        def gconfigure(client: Any, prefix: str, purpose: str) -> None:
            client.set_gcs_config(f"gs://{bucket}/{prefix}", "lightly-tests", key_json, purpose=purpose)

        return Store(kind, bucket, gput, gconfigure, octet)
    from azure.storage.blob import BlobServiceClient
    from lightly_devkit.stores import AZURITE_ACCOUNT, AZURITE_KEY

    az = all_stores.need("azure")
    svc = BlobServiceClient(
        f"{az.url}/{AZURITE_ACCOUNT}", credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    )
    cont = svc.create_container(bucket)

    def aput(key: str, data: bytes) -> None:
        cont.upload_blob(key, data, overwrite=True)

    def aconfigure(client: Any, prefix: str, purpose: str) -> None:
        client.set_azure_config(f"{bucket}/{prefix}", AZURITE_ACCOUNT, AZURITE_KEY, purpose=purpose)

    return Store(kind, bucket, aput, aconfigure, {"x-ms-blob-type": "BlockBlob"})


_counter = iter(range(10**6))


@pytest.fixture(params=["S3", "OBS", "GCS", "AZURE"])
def seeded(request: pytest.FixtureRequest, stores: Stores) -> Store:  # noqa: F811
    store = _make_store(request.param, stores, f"bucket-{request.param.lower()}-{next(_counter)}-{time.time_ns()}")
    # gcp-storage-emulator refuses object names with '..' parts (it stores objects as files); Azure (and
    # Azurite) resolve '..' segments of a blob URL, so such a blob cannot be written there at all; and
    # Azurite 3.37 answers 500 to every listing once a blob name holds a control character (Azure itself
    # lists it XML-encoded), so on AZURE only the names Azurite can list are seeded
    hostile = [h for h in HOSTILE if ".." not in h] if store.kind == "GCS" else HOSTILE
    if store.kind == "AZURE":
        hostile = []
    for name in GOOD + hostile + LIGHTLY_FILES:
        store.put(f"{ROOT}/{name}", _payload(name))
    store.put(f"{ROOT}/folder-marker/", b"")
    store.put("outside/other.jpg", b"not in the datasource")
    return store


def _new_dataset(client: Any) -> str:
    client.create_dataset(f"buckets-{next(_counter)}-{time.time_ns()}")
    return str(client.dataset_id)


def test_a_bucket_datasource_through_the_unmodified_client(client: Any, seeded: Store, api: Api) -> None:
    _new_dataset(client)
    seeded.configure(client, ROOT, "INPUT_OUTPUT")
    assert client.get_datasource().actual_instance.type == seeded.kind

    rows = client.download_raw_samples()
    assert sorted(name for name, _ in rows) == sorted(GOOD)  # hostile keys, .lightly/ and the marker left out
    for name, url in rows:
        got = httpx.get(url, timeout=10)
        assert got.status_code == 200, (name, got.text[:300])
        assert got.content == _payload(name)
    first = dict(rows)["sub dir/space name.png"]
    ranged = httpx.get(first, headers={"Range": "bytes=0-6"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == _payload("sub dir/space name.png")[:7]

    # redirected read URLs: this server's signed URL, answered with a fresh presigned one
    name, redirect = client.download_raw_samples(use_redirected_read_url=True)[0]
    assert redirect.startswith(api.base) and "token=" not in redirect
    assert httpx.get(redirect, follow_redirects=True, timeout=10).content == _payload(name)

    # metadata listing and read URLs of .lightly files
    meta = client.download_raw_metadata()
    assert [m for m, _ in meta] == [".lightly/metadata/a.json"]
    assert httpx.get(meta[0][1], timeout=10).content == _payload(".lightly/metadata/a.json")
    assert httpx.get(client.get_metadata_read_url("a.json"), timeout=10).content == _payload(".lightly/metadata/a.json")
    assert httpx.get(client.get_custom_embedding_read_url("e.csv"), timeout=10).content == _payload(
        ".lightly/embeddings/e.csv"
    )

    # a write URL really uploads; the predictions listing then finds the file
    write = client._datasources_api.get_prediction_file_write_url_from_datasource_by_dataset_id(
        dataset_id=client.dataset_id, file_name="detection/ünï cödé.json"
    )
    put = httpx.put(write, content=b'{"predictions": []}', headers=seeded.put_headers, timeout=10)
    assert put.status_code in (200, 201), put.text[:300]
    preds = client.download_raw_predictions("detection")
    assert [p for p, _ in preds] == [".lightly/predictions/detection/ünï cödé.json"]
    assert httpx.get(preds[0][1], timeout=10).content == b'{"predictions": []}'
    assert httpx.get(client.get_prediction_read_url("detection/ünï cödé.json"), timeout=10).status_code == 200

    # the extensions the worker uses: readUrl, writeUrl, listing a sub-prefix of .lightly
    url = api.get(paths.datasource_read_url(client.dataset_id), params={"fileName": "deep/1/2/3/4/5/6/7/8/leaf.jpg"})
    assert url.status_code == 200 and httpx.get(url.json(), timeout=10).content == _payload(
        "deep/1/2/3/4/5/6/7/8/leaf.jpg"
    )
    w = api.get(paths.datasource_write_url(client.dataset_id), params={"fileName": ".lightly/datapool/x.txt"})
    assert httpx.put(w.json(), content=b"pool", headers=seeded.put_headers, timeout=10).status_code in (200, 201)
    listed = api.get(
        paths.datasource_list(client.dataset_id), params={"purpose": "LIGHTLY", "prefix": ".lightly/datapool"}
    ).json()
    assert [r["fileName"] for r in listed["data"]] == [".lightly/datapool/x.txt"] and listed["hasMore"] is False

    assert client.list_datasource_permissions() == {
        "can_list": True,
        "can_read": True,
        "can_write": True,
        "can_overwrite": True,
    }

    # processedUntilTimestamp, and download_new_raw_samples (from it, then updating it)
    assert client.get_processed_until_timestamp() == 0
    assert sorted(n for n, _ in client.download_new_raw_samples()) == sorted(GOOD)
    assert client.get_processed_until_timestamp() > 0
    assert client.download_new_raw_samples() == []
    client.update_processed_until_timestamp(5)
    assert client.get_processed_until_timestamp() == 5
    seeded.configure(client, ROOT, "INPUT_OUTPUT")  # a new config keeps it
    assert client.get_processed_until_timestamp() == 5


def test_hostile_names_are_refused_with_the_reason(client: Any, api: Api, stores: Stores) -> None:  # noqa: F811
    store = _make_store("S3", stores, f"hostile-{time.time_ns()}")
    store.put("in/a.jpg", b"x")
    _new_dataset(client)
    store.configure(client, "in", "INPUT_OUTPUT")
    for bad in ["../secret", "/abs.jpg", "a/../../b", "tab\there.jpg"]:
        r = api.get(paths.datasource_read_url(client.dataset_id), params={"fileName": bad})
        assert r.status_code == 400, bad
        assert "fileName" in r.json()["error"]
    r = api.get(paths.datasource_list(client.dataset_id), params={"prefix": "../other"})
    assert r.status_code == 400 and "prefix" in r.json()["error"]
    r = api.get(paths.datasource_list(client.dataset_id), params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "cursor" in r.json()["error"]


def test_paging_with_cursors_over_many_keys(client: Any, api: Api, stores: Stores) -> None:  # noqa: F811
    store = _make_store("S3", stores, f"many-{time.time_ns()}")
    n = 1234
    names = [f"p/{i:05d}.jpg" for i in range(n)]
    for name in names:
        store.put(f"root/{name}", b"x")
    _new_dataset(client)
    store.configure(client, "root", "INPUT_OUTPUT")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 500}
        if cursor:
            params["cursor"] = cursor
        page = api.get(paths.datasource_list(client.dataset_id), params=params).json()
        assert len(page["data"]) <= 500
        seen += [r["fileName"] for r in page["data"]]
        pages += 1
        if not page["hasMore"]:
            assert page["cursor"] == ""
            break
        cursor = page["cursor"]
    assert pages == 3 and seen == names  # in key order, each once
    # the client's own paging (its dnc cursor, then the server's default pages of 1000)
    assert sorted(n for n, _ in client.download_raw_samples(divide_and_conquer_shards=4)) == names


def test_relevant_filenames_file(client: Any, api: Api, stores: Stores) -> None:  # noqa: F811
    store = _make_store("S3", stores, f"relevant-{time.time_ns()}")
    for name in ["a.jpg", "b.jpg", "c d.jpg"]:
        store.put(f"in/{name}", b"x")
    store.put("in/relevant.txt", b"c d.jpg\r\n../evil.jpg\n\na.jpg\n")
    _new_dataset(client)
    store.configure(client, "in", "INPUT_OUTPUT")
    rows = client.download_raw_samples(relevant_filenames_file_name="relevant.txt")
    assert [n for n, _ in rows] == ["c d.jpg", "a.jpg"]
    r = api.get(paths.datasource_list(client.dataset_id), params={"relevantFilenamesFileName": "missing.txt"})
    assert r.status_code == 400
    assert r.json()["code"] == "DATASET_DATASOURCE_RELEVANT_FILENAMES_INVALID" and "missing.txt" in r.json()["error"]


def test_wrong_keys_and_missing_buckets_name_the_datasource(
    client: Any,
    api: Api,
    stores: Stores,  # noqa: F811
) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    checked = stores.need("s3auth")
    _s3_client(checked.url, checked.access_key, checked.secret_key).create_bucket(Bucket="checked")
    _s3_client(checked.url, checked.access_key, checked.secret_key).put_object(
        Bucket="checked", Key="in/a.jpg", Body=b"x"
    )
    _new_dataset(client)
    client.set_obs_config("obs://checked/in", checked.url, checked.access_key, "wrong-secret", purpose="INPUT_OUTPUT")
    with pytest.raises(ApiException) as err:
        client._datasources_api.get_list_of_raw_samples_from_datasource_by_dataset_id(dataset_id=client.dataset_id)
    assert err.value.status == 400
    assert "SignatureDoesNotMatch" in err.value.body and "obs://checked/in/" in err.value.body
    assert "wrong-secret" not in err.value.body
    perms = client.list_datasource_permissions()
    assert perms["can_list"] is False and perms["can_write"] is False
    assert "SignatureDoesNotMatch" in perms["errors"]["can_list"] and "obs://checked/in/" in perms["errors"]["can_list"]

    client.set_obs_config("obs://no-such-bucket/in", checked.url, checked.access_key, checked.secret_key)
    r = api.get(paths.datasource_list(client.dataset_id))
    assert (
        r.status_code == 400 and "NoSuchBucket" in r.json()["error"] and "obs://no-such-bucket/in/" in r.json()["error"]
    )

    client.set_obs_config("obs://checked/no/such/prefix", checked.url, checked.access_key, checked.secret_key)
    assert client.download_raw_samples() == []
    perms = client.list_datasource_permissions()
    assert perms["can_list"] is True and perms["can_write"] is True and perms["can_read"] is True

    # the right keys
    client.set_obs_config("obs://checked/in", checked.url, checked.access_key, checked.secret_key)
    assert [n for n, _ in client.download_raw_samples()] == ["a.jpg"]


def _config_id(client: Any, bypass: bool = False) -> str:
    cfg: dict[str, Any] = {"datasource": {"bypass_verify": True}} if bypass else {}
    return str(
        client.create_compute_worker_config(
            worker_config=cfg,
            selection_config={
                "n_samples": 1,
                "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
            },
        )
    )


def test_scheduling_refuses_a_run_on_an_unreadable_datasource(
    client: Any,
    stores: Stores,  # noqa: F811
) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    checked = stores.need("s3auth")
    s3 = _s3_client(checked.url, checked.access_key, checked.secret_key)
    if "checked" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:  # this test alone: its own bucket
        s3.create_bucket(Bucket="checked")
        s3.put_object(Bucket="checked", Key="in/a.jpg", Body=b"x")
    _new_dataset(client)
    client.set_obs_config("obs://checked/in", checked.url, checked.access_key, "wrong-secret", purpose="INPUT_OUTPUT")
    with pytest.raises(ApiException) as err:
        client.schedule_compute_worker_run(
            worker_config={},
            selection_config={
                "n_samples": 1,
                "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
            },
        )
    assert err.value.status == 400
    assert "SignatureDoesNotMatch" in err.value.body and "obs://checked/in/" in err.value.body
    assert "bypass_verify" in err.value.body
    # Lightly's bypass: the run is scheduled as it is
    sid = client.schedule_compute_worker_run(
        worker_config={"datasource": {"bypass_verify": True}},
        selection_config={
            "n_samples": 1,
            "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
        },
    )
    assert sid
    # a readable one is scheduled, and is there to be picked up
    client.set_obs_config("obs://checked/in", checked.url, checked.access_key, checked.secret_key)
    readable = client.schedule_compute_worker_run(
        worker_config={},
        selection_config={
            "n_samples": 1,
            "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
        },
    )
    assert readable in {r.id for r in client.get_scheduled_compute_worker_runs()}


class _Throttling(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that always answers 503 SlowDown (counting the requests)."""

    hits = 0
    requests: list[str] = []

    def _slow_down(self) -> None:
        type(self).hits += 1
        type(self).requests.append(f"{self.command} {self.path}")
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _slow_down

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def throttling_store() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_throttling_store_is_retried_then_answered_with_429(client: Any, api: Api, throttling_store: str) -> None:
    _new_dataset(client)
    client.set_obs_config("obs://busy/in", throttling_store, "AKID", "SECRET", purpose="INPUT_OUTPUT")
    time.sleep(0.5)  # anything the config's own check sent is counted before the listing
    _Throttling.hits, _Throttling.requests = 0, []
    r = api.get(paths.datasource_list(client.dataset_id))
    assert r.status_code == 429 and r.headers["Retry-After"]
    assert "SlowDown" in r.json()["error"] and "obs://busy/in/" in r.json()["error"]
    listings = [x for x in _Throttling.requests if x.startswith("GET /busy") and "list-type=2" in x]
    assert len(listings) == 3, _Throttling.requests  # retried with backoff, bounded (3 attempts)


def test_s3_delegated_access_assumes_the_role_through_sts(client: Any, stores: Stores) -> None:  # noqa: F811
    s3 = stores.need("s3")
    _s3_client(s3.url).create_bucket(Bucket="delegated")
    _s3_client(s3.url).put_object(Bucket="delegated", Key="in/a.jpg", Body=b"delegated bytes")
    _new_dataset(client)
    client.set_s3_delegated_access_config(
        "s3://delegated/in", "us-east-1", "arn:aws:iam::123456789012:role/lightly", "external-id-1234", purpose="INPUT"
    )
    rows = client.download_raw_samples()
    assert [n for n, _ in rows] == ["a.jpg"]
    assert httpx.get(rows[0][1], timeout=10).content == b"delegated bytes"
    assert "X-Amz-Security-Token" in rows[0][1]  # the assumed role's temporary keys


def test_other_users_and_local_datasources(client: Any, api: Api, db_backend: Backend, stores: Stores) -> None:  # noqa: F811
    store = _make_store("S3", stores, f"private-{time.time_ns()}")
    store.put("in/a.jpg", b"x")
    dataset_id = _new_dataset(client)
    store.configure(client, "in", "INPUT_OUTPUT")
    other = Api(api.base, db_backend.token())
    for path, params in [
        (paths.datasource_list(dataset_id), {}),
        (paths.datasource_list_dnc(dataset_id), {"dncShards": 1}),
        (paths.datasource_read_url(dataset_id), {"fileName": "a.jpg"}),
        (paths.datasource_write_url(dataset_id), {"fileName": "a.jpg"}),
        (paths.datasource_verify(dataset_id), {}),
        (paths.datasource_processed_until(dataset_id), {}),
        (paths.datasource_metadata_file(dataset_id), {"fileName": "a.json"}),
    ]:
        r = other.get(path, params=params)
        assert r.status_code == 404, (path, r.text)
    assert (
        other.put(paths.datasource_processed_until(dataset_id), json={"processedUntilTimestamp": 1}).status_code == 404
    )
    # a redirect URL of one user's listing does not open another dataset
    _, redirect = client.download_raw_samples(use_redirected_read_url=True)[0]
    forged = redirect.replace(dataset_id, "0" * 24)
    assert httpx.get(forged, timeout=10).status_code == 403

    client.set_local_config("images", purpose="INPUT_OUTPUT")
    r = api.get(paths.datasource_list(dataset_id))
    assert r.status_code == 400 and "LOCAL" in r.json()["error"] and "/input_mount" in r.json()["error"]
    assert r.json()["code"] == "DATASET_DATASOURCE_ACTION_NOT_IMPLEMENTED"


def test_presigned_urls_tampered_or_expired_are_refused_by_azurite(stores: Stores) -> None:  # noqa: F811
    """Azurite checks SAS signatures and expiry as Azure does (moto and the GCS emulator check neither)."""
    from lightly_devkit.stores import AZURITE_ACCOUNT, AZURITE_KEY
    from lightly_server import storage

    az = stores.need("azure")
    store = _make_store("AZURE", stores, f"signed-{time.time_ns()}")
    store.put("in/a.jpg", b"signed bytes")
    config = {
        "type": "AZURE",
        "fullPath": f"{store.bucket}/in",
        "accountName": AZURITE_ACCOUNT,
        "accountKey": AZURITE_KEY,
    }
    bucket = storage.open_bucket(config, storage.BucketSettings(timeout_s=5, azure_endpoint=az.extra["endpoint"]))
    url = bucket.sign("GET", "in/a.jpg", 60)
    assert httpx.get(url, timeout=10).content == b"signed bytes"
    tampered = url.replace("sp=r", "sp=rw")
    assert httpx.get(tampered, timeout=10).status_code == 403
    other_blob = url.replace("/in/a.jpg", "/in/b.jpg")
    assert httpx.get(other_blob, timeout=10).status_code == 403
    short = bucket.sign("GET", "in/a.jpg", 1)
    time.sleep(2.5)
    assert httpx.get(short, timeout=10).status_code == 403
    # a read URL does not write
    assert httpx.put(url, content=b"overwrite", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10).status_code == 403


def test_azure_with_a_sas_token(client: Any, stores: Stores) -> None:  # noqa: F811
    """Lightly's set_azure_config takes a SAS token: its URLs carry that token (the server cannot narrow it)."""
    import datetime

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    from lightly_devkit.stores import AZURITE_ACCOUNT, AZURITE_KEY

    store = _make_store("AZURE", stores, f"sas-{time.time_ns()}")
    store.put("in/a.jpg", b"sas bytes")
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        store.bucket,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True, write=True, create=True, delete=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    _new_dataset(client)
    client.set_azure_config(f"{store.bucket}/in", AZURITE_ACCOUNT, sas, purpose="INPUT_OUTPUT")
    rows = client.download_raw_samples()
    assert [n for n, _ in rows] == ["a.jpg"]
    got = httpx.get(rows[0][1], timeout=10)
    assert got.content == b"sas bytes", (got.status_code, got.text, rows[0][1].split("?")[0])
    assert client.list_datasource_permissions()["can_write"] is True


def test_the_server_log_holds_no_keys_nor_signatures(db_backend: Backend) -> None:
    log = server_log(db_backend)
    assert "SECRET" not in log.replace("SECRET_KEY", "") and "wrong-secret" not in log
    assert "X-Amz-Signature" not in log and "sig=" not in log and "X-Goog-Signature" not in log
    assert "skipped" in log  # the hostile keys, with the reason
