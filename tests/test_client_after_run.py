"""The calls a data scientist's script makes after a run, through the real, unmodified ``lightly==1.5.26``
client against our server (SQLite and PostgreSQL): tags from filenames, exports with real read URLs,
``download_dataset``, the embeddings API, dataset delete and share.

This module's server reads LOCAL datasources under a folder of real images (``--local-datasource-root``),
so the read URLs it hands out answer the files' bytes. The worker's side of a run is played over raw HTTP
(the helpers of test_client_compat.py).
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
from conftest import run_sql
from PIL import Image
from test_client_compat import (
    OID,
    schedule_simple,
    worker_pick_up,
    worker_run_to_completion,
    worker_select,
    worker_set_state,
    worker_upload_artifact,
)

if TYPE_CHECKING:
    from conftest import Api, Backend, ServerProcess

NAMES = ["img-0.png", "img-1.png", "sub/img-2.png", "sub/deeper/img-3.jpg"]
COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (230, 230, 20)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the server reads LOCAL datasources under: ``images/`` with four real images, a file
    outside it and a symlink that points there."""
    root = tmp_path_factory.mktemp("datasources")
    for name, colour in zip(NAMES, COLOURS, strict=True):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), colour).save(path)
    (root / "secret.txt").write_text("not for export")
    (root / "images" / "escape.png").symlink_to(root / "secret.txt")
    (root / "images" / "loop.png").symlink_to(root / "images" / "loop.png")
    return root


@pytest.fixture(scope="module")
def server(db_backend: Backend, data_root: Path) -> ServerProcess:
    return db_backend.start_server("--local-datasource-root", str(data_root))


def _dataset_after_run(client, api: Api, selected: list[str], name: str | None = None) -> tuple[str, str]:
    """A dataset on ``images/`` whose completed run selected ``selected``: (dataset id, run id)."""
    client.create_dataset(name or f"ds-{secrets.token_hex(4)}")
    client.set_local_config(relative_path="images", purpose="INPUT")
    wid = client.register_compute_worker(name=f"w-{secrets.token_hex(3)}")
    run_id = worker_run_to_completion(api, wid, schedule_simple(client), selected)
    return client.dataset_id, run_id


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "error"} and body["error"]
    return str(body["error"])


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


# --------------------------------------------------------------------------- tags


def test_initial_tag_and_create_tag_from_filenames(client, api: Api) -> None:
    ds, run_id = _dataset_after_run(client, api, NAMES[:3])
    tags = {t.name: t for t in client.get_all_tags()}
    assert set(tags) == {"initial-tag", f"selected-{run_id}"}
    initial = tags["initial-tag"]
    assert client.get_filenames_in_tag(initial) == NAMES[:3]
    assert tags[f"selected-{run_id}"].prev_tag_id == initial.id

    created = client.create_tag_from_filenames(["sub/img-2.png", "img-0.png"], new_tag_name="my-pick")
    assert OID.match(created.id)
    tag = client.get_tag_by_name("my-pick")
    assert tag.prev_tag_id == initial.id and tag.tot_size == 3
    assert client.get_filenames_in_tag(tag) == ["img-0.png", "sub/img-2.png"]
    assert client.export_filenames_by_tag_name("my-pick").split("\n") == ["img-0.png", "sub/img-2.png"]

    with pytest.raises(RuntimeError, match="already exists a tag"):
        client.create_tag_from_filenames(["img-0.png"], new_tag_name="my-pick")
    with pytest.raises(RuntimeError, match="only 1 have been found"):
        client.create_tag_from_filenames(["img-0.png", "nope.png"], new_tag_name="other-pick")

    # a later run's new samples grow the initial-tag; the earlier tags keep their members
    wid = client.register_compute_worker(name="grow-worker")
    worker_run_to_completion(api, wid, schedule_simple(client), [NAMES[3]])
    assert client.get_filenames_in_tag(client.get_tag_by_name("initial-tag")) == NAMES
    assert client.get_filenames_in_tag(client.get_tag_by_name("my-pick")) == ["img-0.png", "sub/img-2.png"]

    # the server checks what the client would: clear 4xx, nothing stored
    body = {"name": "raw-tag", "prevTagId": initial.id, "bitMaskData": "0x1", "totSize": 3}
    assert "totSize is 3 but dataset" in _error(api.post(f"/v1/datasets/{ds}/tags", json=body), 400)
    body["totSize"] = 4
    assert "beyond totSize 4" in _error(api.post(f"/v1/datasets/{ds}/tags", json={**body, "bitMaskData": "0x30"}), 400)
    assert "no sample" in _error(api.post(f"/v1/datasets/{ds}/tags", json={**body, "bitMaskData": "0x0"}), 400)
    unknown = {**body, "prevTagId": secrets.token_hex(12)}
    assert "prevTagId" in _error(api.post(f"/v1/datasets/{ds}/tags", json=unknown), 404)
    assert "bitMaskData" in _error(api.post(f"/v1/datasets/{ds}/tags", json={**body, "bitMaskData": "ff"}), 400)
    assert "already has a tag" in _error(api.post(f"/v1/datasets/{ds}/tags", json={**body, "name": "my-pick"}), 409)
    assert "raw-tag" not in {t.name for t in client.get_all_tags()}


# --------------------------------------------------------------------------- exports and read URLs


def test_filenames_and_read_urls_are_real_signed_urls(client, api: Api, data_root: Path) -> None:
    ds, run_id = _dataset_after_run(client, api, NAMES)
    rows = client.export_filenames_and_read_urls_by_tag_name(f"selected-{run_id}")
    assert [r["fileName"] for r in rows] == NAMES
    assert [r["datasourceUrl"] for r in rows] == [f"images/{n}" for n in NAMES]
    for row in rows:
        url = row["readUrl"]
        assert url.startswith(api.base) and "signature=" in url and "token=" not in url
        got = httpx.get(url, timeout=30)  # no token: the signature is the authorisation
        assert got.status_code == 200, got.text
        assert got.content == (data_root / "images" / row["fileName"]).read_bytes()
        assert got.headers["content-type"] in ("image/png", "image/jpeg")

    url = rows[0]["readUrl"]
    sig = parse_qs(urlsplit(url).query)["signature"][0]
    tampered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert "invalid or expired" in _error(httpx.get(_with_query(url, signature=tampered), timeout=30), 403)
    expired = int(time.time()) - 5
    assert "invalid or expired" in _error(httpx.get(_with_query(url, expires=str(expired)), timeout=30), 403)
    # a signature is for one sample of one dataset only
    other = url.replace(f"/samples/{'0' * 24}/", f"/samples/{'0' * 23}1/")
    assert other != url
    assert "invalid or expired" in _error(httpx.get(other, timeout=30), 403)

    # the lifetime asked for is the lifetime given (expiresIn, at most 7 days)
    tag = client.get_tag_by_name(f"selected-{run_id}")
    page = api.get(
        f"/v1/datasets/{ds}/tags/{tag.id}/export/basic/filenames",
        params={"fileNameFormat": "REDIRECTED_READ_URL", "expiresIn": "60"},
    ).json()
    expires = int(parse_qs(urlsplit(page.split("\n")[0]).query)["expires"][0])
    assert 0 < expires - time.time() <= 61
    too_long = {"fileNameFormat": "REDIRECTED_READ_URL", "expiresIn": str(8 * 24 * 3600)}
    _error(api.get(f"/v1/datasets/{ds}/tags/{tag.id}/export/basic/filenames", params=too_long), 400)
    bad_format = {"fileNameFormat": "URL"}
    assert "fileNameFormat" in _error(
        api.get(f"/v1/datasets/{ds}/tags/{tag.id}/export/basic/filenames", params=bad_format), 400
    )


def test_read_urls_refuse_files_outside_the_datasource(client, api: Api) -> None:
    _ds, run_id = _dataset_after_run(client, api, ["escape.png", "loop.png", "missing.png", "../secret.txt"])
    rows = {
        r["fileName"]: r["readUrl"] for r in client.export_filenames_and_read_urls_by_tag_name(f"selected-{run_id}")
    }
    assert "not a regular file inside" in _error(httpx.get(rows["escape.png"], timeout=30), 404)
    assert "cannot be read" in _error(httpx.get(rows["loop.png"], timeout=30), 404)
    missing = _error(httpx.get(rows["missing.png"], timeout=30), 404)
    assert "images/missing.png cannot be read" in missing and "/tmp" not in missing  # no server path
    assert "not a regular file inside" in _error(httpx.get(rows["../secret.txt"], timeout=30), 404)


def test_read_urls_without_a_local_root_say_what_to_set(db_backend: Backend, monkeypatch) -> None:
    from conftest import Api as RawApi
    from lightly.api import ApiWorkflowClient

    bare = db_backend.start_server()
    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", bare.url)
    token = db_backend.token()
    client = ApiWorkflowClient(token=token)
    api = RawApi(bare.url, token)
    _ds, run_id = _dataset_after_run(client, api, NAMES[:1])
    (row,) = client.export_filenames_and_read_urls_by_tag_name(f"selected-{run_id}")
    assert "--local-datasource-root" in _error(httpx.get(row["readUrl"], timeout=30), 404)
    bare.stop()


def test_label_studio_and_labelbox_exports(client, api: Api, data_root: Path) -> None:
    _ds, run_id = _dataset_after_run(client, api, NAMES[:2])
    name = f"selected-{run_id}"
    # 1.5.26's client answers LabelStudioTask models here (its download mixin's method wins the MRO)
    tasks = [t.to_dict(by_alias=True) for t in client.export_label_studio_tasks_by_tag_name(name)]
    assert [t["data"]["lightlyFileName"] for t in tasks] == NAMES[:2]
    assert [t["id"] for t in tasks] == [0, 1]
    for task in tasks:
        got = httpx.get(task["data"]["image"], timeout=30)
        assert got.content == (data_root / "images" / task["data"]["lightlyFileName"]).read_bytes()

    rows = client.export_label_box_v4_data_rows_by_tag_name(name)
    assert [(r["global_key"], r["media_type"]) for r in rows] == [(n, "IMAGE") for n in NAMES[:2]]
    for row in rows:
        assert set(row) == {"row_data", "global_key", "media_type"}
        assert httpx.get(row["row_data"], timeout=30).content == (data_root / "images" / row["global_key"]).read_bytes()


def test_exports_paginate(client, api: Api) -> None:
    """More samples than the client's page (2500): every page has its own URLs, in order."""
    names = [f"frames/f-{i:05d}.png" for i in range(2600)]
    _ds, run_id = _dataset_after_run(client, api, names)
    tasks = client.export_label_studio_tasks_by_tag_name(f"selected-{run_id}")
    assert [t.data.lightly_file_name for t in tasks] == names
    assert len({t.data.image for t in tasks}) == len(names)
    rows = client.export_filenames_and_read_urls_by_tag_name(f"selected-{run_id}")
    assert [r["fileName"] for r in rows] == names


def test_download_dataset(client, api: Api, data_root: Path, tmp_path: Path) -> None:
    _ds, run_id = _dataset_after_run(client, api, NAMES[1:])
    assert client._datasets_api.get_dataset_by_id(client.dataset_id).img_type == "full"
    # max_workers=1: lightly 1.5.26's threads race to create a shared sub-folder (exists-check then
    # os.makedirs without exist_ok), so a parallel download of two files under one new folder can lose one
    # with "[Errno 17] File exists": the client's own flake, not a read URL's (docs/server.md says so)
    client.download_dataset(str(tmp_path / "all"), verbose=False, max_workers=1)
    for name in NAMES[1:]:
        got = np.asarray(Image.open(tmp_path / "all" / name).convert("RGB"))
        want = np.asarray(Image.open(data_root / "images" / name).convert("RGB"))
        assert np.array_equal(got, want), name
    client.download_dataset(str(tmp_path / "sel"), tag_name=f"selected-{run_id}", verbose=False, max_workers=1)
    assert sorted(p.relative_to(tmp_path / "sel").as_posix() for p in (tmp_path / "sel").rglob("*.*")) == sorted(
        NAMES[1:]
    )
    with pytest.raises(ValueError, match="has no tag no-such-tag"):
        client.download_dataset(str(tmp_path / "x"), tag_name="no-such-tag", verbose=False)
    # the read URL call itself: type=full only
    ds = client.dataset_id
    assert "type=full" in _error(
        api.get(f"/v1/datasets/{ds}/samples/{'0' * 24}/readurl", params={"type": "thumbnail"}), 400
    )
    _error(api.get(f"/v1/datasets/{ds}/samples/{'f' * 24}/readurl"), 404)


# --------------------------------------------------------------------------- embeddings


def _csv(names: list[str], dim: int = 3, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["filenames", *[f"embedding_{i}" for i in range(dim)], "labels"])
    for n in names:
        w.writerow([n, *[f"{v:.6f}" for v in rng.normal(size=dim)], 0])
    return out.getvalue().encode()


def test_run_embeddings_download_list_and_upload(client, api: Api, tmp_path: Path) -> None:
    client.create_dataset(f"emb-{secrets.token_hex(3)}")
    client.set_local_config(relative_path="images", purpose="INPUT")
    assert client.get_all_embedding_data() == []
    with pytest.raises(RuntimeError, match="Could not find embeddings"):
        client.download_embeddings_csv(str(tmp_path / "none.csv"))

    wid = client.register_compute_worker(name="emb-worker")
    run_id = worker_pick_up(api, wid, schedule_simple(client))
    selected = NAMES[:3]
    run_csv = _csv(selected)
    worker_upload_artifact(api, run_id, "data/selected_embeddings_including_datapool.csv", "LOG", run_csv)
    worker_select(api, run_id, selected)
    worker_set_state(api, run_id, "COMPLETED")

    (default,) = client.get_all_embedding_data()
    assert default.name.startswith("default_") and default.is_processed and OID.match(default.id)
    client.download_embeddings_csv(str(tmp_path / "default.csv"))
    assert (tmp_path / "default.csv").read_bytes() == run_csv

    # a user's own embeddings, Lightly's CSV, rows in any order: the client orders them by the server's samples
    mine = tmp_path / "mine.csv"
    mine.write_bytes(_csv(list(reversed(selected)), dim=4, seed=1))
    client.upload_embeddings(str(mine), name="my-embeddings")
    listed = client.get_all_embedding_data()
    assert [e.name for e in listed] == ["my-embeddings", default.name]  # newest first
    assert client.embedding_id == listed[0].id
    client.download_embeddings_csv_by_id(listed[0].id, str(tmp_path / "back.csv"))
    back = list(csv.reader((tmp_path / "back.csv").open()))
    assert back[0] == ["filenames", "embedding_0", "embedding_1", "embedding_2", "embedding_3", "labels"]
    assert [r[0] for r in back[1:]] == selected  # the dataset's order
    source = {r[0]: r for r in csv.reader(mine.open())}
    assert all(r == source[r[0]] for r in back[1:])
    # download_embeddings_csv still takes the latest *default* one (Lightly's rule)
    client.download_embeddings_csv(str(tmp_path / "default2.csv"))
    assert (tmp_path / "default2.csv").read_bytes() == run_csv

    # uploading under an existing name appends the server's rows (client) and stores a suffixed copy
    client.upload_embeddings(str(mine), name="my-embeddings")
    assert len([e for e in client.get_all_embedding_data() if e.name.startswith("my-embeddings")]) == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"name,embedding_0\na,1\n", "header must start with 'filenames'"),
        (b"filenames,embedding_1\nimg-0.png,1\n", "embedding_0,...,embedding_{D-1}"),
        (b"filenames,embedding_0,labels\nimg-0.png,nan,0\n", "line 2: embedding_0 is not a finite number"),
        (b"filenames,embedding_0,labels\nimg-0.png,1\n", "line 2: 2 columns"),
        (b"filenames,embedding_0,labels\nimg-0.png,1,x\n", "labels must be an integer"),
        (b"filenames,embedding_0\nimg-0.png,1\nimg-0.png,2\n", "appears twice"),
        (b"filenames,embedding_0\nother.png,1\n", "'other.png' is not a sample of the dataset"),
        (b"filenames,embedding_0\n", "no rows"),
        (b"filenames,embedding_0\n\xff\xfe,1\n", "not UTF-8"),
    ],
)
def test_bad_embedding_uploads_are_refused(client, api: Api, content: bytes, needle: str) -> None:
    ds, _run = _dataset_after_run(client, api, NAMES[:1])
    made = api.get(f"/v1/datasets/{ds}/embeddings/writeCSVUrl", params={"name": "bad"}).json()
    r = httpx.put(made["signedWriteUrl"], content=content, timeout=30)
    assert needle in _error(r, 400)
    assert [e.name for e in client.get_all_embedding_data()] == [] or all(
        e.name != "bad" for e in client.get_all_embedding_data()
    )
    # the same URL takes a good file afterwards
    assert httpx.put(made["signedWriteUrl"], content=b"filenames,embedding_0\nimg-0.png,1\n", timeout=30).is_success
    assert "bad" in [e.name for e in client.get_all_embedding_data()]
    again = httpx.put(made["signedWriteUrl"], content=b"filenames,embedding_0\nimg-0.png,2\n", timeout=30)
    assert "stored already" in _error(again, 409)


def test_embedding_calls_check_their_input(client, api: Api) -> None:
    ds, _run = _dataset_after_run(client, api, NAMES[:1])
    assert "name" in _error(api.get(f"/v1/datasets/{ds}/embeddings/writeCSVUrl"), 400)
    assert "control characters" in _error(
        api.get(f"/v1/datasets/{ds}/embeddings/writeCSVUrl", params={"name": "a\tb"}), 400
    )
    unknown = secrets.token_hex(12)
    _error(api.get(f"/v1/datasets/{ds}/embeddings/{unknown}/readCSVUrl"), 404)
    made = api.get(f"/v1/datasets/{ds}/embeddings/writeCSVUrl", params={"name": "later"}).json()
    assert "no uploaded CSV" in _error(api.get(f"/v1/datasets/{ds}/embeddings/{made['embeddingId']}/readCSVUrl"), 404)
    two_d = {"dimensionalityReductionMethod": "PCA"}
    assert (
        api.post(f"/v1/datasets/{ds}/embeddings/{made['embeddingId']}/trigger2dEmbeddingsJob", json=two_d).status_code
        == 204
    )
    bad_2d = {"dimensionalityReductionMethod": "LDA"}
    _error(api.post(f"/v1/datasets/{ds}/embeddings/{made['embeddingId']}/trigger2dEmbeddingsJob", json=bad_2d), 400)
    assert httpx.put(made["signedWriteUrl"], content=b"filenames,embedding_0\nimg-0.png,1\n", timeout=30).is_success
    assert api.delete(f"/v1/datasets/{ds}/embeddings/{made['embeddingId']}").status_code == 204
    assert client.get_all_embedding_data() == []
    read = _with_query(made["signedWriteUrl"])
    assert httpx.get(read, timeout=30).status_code == 403  # a write signature is no read signature


# --------------------------------------------------------------------------- delete and share


def test_delete_dataset(client, api: Api, db_backend: Backend, tmp_path: Path) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    ds, done_run = _dataset_after_run(client, api, NAMES[:2], name="to-delete")
    mine = tmp_path / "e.csv"
    mine.write_bytes(_csv(NAMES[:2]))
    client.upload_embeddings(str(mine), name="mine")
    open_sid = schedule_simple(client)  # never picked up: goes with the dataset
    wid = client.register_compute_worker(name="busy-worker")
    busy_run = worker_pick_up(api, wid, schedule_simple(client))

    with pytest.raises(ApiException) as exc:
        client.delete_dataset_by_id(ds)
    assert exc.value.status == 409 and f"run {busy_run} is STARTED" in str(exc.value.body)
    assert client.dataset_exists(ds)  # nothing deleted

    worker_set_state(api, busy_run, "FAILED", "stopped")
    client.delete_dataset_by_id(ds)
    assert not client.dataset_exists(ds)
    _error(api.get(f"/v1/datasets/{ds}/tags"), 404)
    _error(api.get(f"/v1/datasets/{ds}/embeddings"), 404)
    _error(api.get(f"/v1/datasets/{ds}/datasource"), 404)
    assert run_sql(db_backend, "SELECT id FROM scheduled_runs WHERE id = :s", s=open_sid) == []
    # the name is free again (and the client has a current dataset again)
    client.create_dataset("to-delete")
    assert client.dataset_id != ds
    assert client.get_compute_worker_run_info(open_sid).state == "CANCELED_OR_NOT_EXISTING"
    # the run history stays, without the dataset
    runs = {r.id: r for r in client.get_compute_worker_runs()}
    assert {done_run, busy_run} <= set(runs)
    assert runs[done_run].dataset_id is None and runs[done_run].state == "COMPLETED"
    assert runs[busy_run].state == "FAILED"
    with pytest.raises(ApiException) as exc:
        client.delete_dataset_by_id(ds)
    assert exc.value.status == 404


def test_sharing_is_refused_clearly(client, api: Api) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    client.create_dataset("share-me")
    ds = client.dataset_id
    sent: list[dict] = []
    real = client._collaboration_api.create_or_update_shared_access_config_by_dataset_id

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(kwargs["shared_access_config_create_request"].to_dict(by_alias=True))
        return real(*args, **kwargs)

    client._collaboration_api.create_or_update_shared_access_config_by_dataset_id = spy
    with pytest.raises(ApiException) as exc:
        client.share_dataset_only_with(ds, ["alice@example.com"])
    assert exc.value.status == 400 and "sharing datasets is not supported" in str(exc.value.body)
    assert sent == [{"accessType": "WRITE", "users": ["alice@example.com"], "creator": "USER_PIP"}]
    assert client.get_shared_users(ds) == []
    with pytest.raises(ApiException) as exc:
        client.share_dataset_only_with(secrets.token_hex(12), [])
    assert exc.value.status == 404
    bad = {"accessType": "READ", "users": []}
    assert "accessType" in _error(api.post(f"/v1/datasets/{ds}/collaboration/access", json=bad), 400)


# --------------------------------------------------------------------------- isolation


def test_other_users_see_none_of_it(client, api: Api, db_backend: Backend, server: ServerProcess) -> None:
    from conftest import Api as RawApi

    ds, run_id = _dataset_after_run(client, api, NAMES[:2])
    tag = client.get_tag_by_name(f"selected-{run_id}")
    made = api.get(f"/v1/datasets/{ds}/embeddings/writeCSVUrl", params={"name": "owned"}).json()
    eid = made["embeddingId"]
    mallory = RawApi(server.url, db_backend.token())
    for path in (
        f"/v1/datasets/{ds}/tags/{tag.id}/export/LabelStudio/tasks",
        f"/v1/datasets/{ds}/tags/{tag.id}/export/LabelBoxV4/datarows",
        f"/v1/datasets/{ds}/tags/{tag.id}/export/basic/filenames",
        f"/v1/datasets/{ds}/samples/{'0' * 24}/readurl",
        f"/v1/datasets/{ds}/embeddings",
        f"/v1/datasets/{ds}/embeddings/writeCSVUrl?name=x",
        f"/v1/datasets/{ds}/embeddings/{eid}/readCSVUrl",
        f"/v1/datasets/{ds}/collaboration/access",
        f"/v1/datasets/{ds}/mappings?field=_id",
    ):
        where, _, query = path.partition("?")
        _error(mallory.get(where, params=dict(parse_qs(query))), 404)
    _error(mallory.delete(f"/v1/datasets/{ds}"), 404)
    _error(mallory.delete(f"/v1/datasets/{ds}/embeddings/{eid}"), 404)
    body = {"name": "stolen", "prevTagId": tag.id, "bitMaskData": "0x1", "totSize": 2}
    _error(mallory.post(f"/v1/datasets/{ds}/tags", json=body), 404)
    _error(mallory.post(f"/v1/datasets/{ds}/collaboration/access", json={"accessType": "WRITE", "users": []}), 404)
    _error(
        mallory.post(
            f"/v1/datasets/{ds}/embeddings/{eid}/trigger2dEmbeddingsJob", json={"dimensionalityReductionMethod": "PCA"}
        ),
        404,
    )
    assert client.dataset_exists(ds) and client.get_tag_by_name(f"selected-{run_id}").id == tag.id
