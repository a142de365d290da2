"""Data in a bucket, end to end on a real cluster: a fleet with no volumes reads an S3 datasource.

moto's S3 server runs on this machine at the address the cluster's pods reach (``e2e_s3`` in
tests/e2e_fixtures.py: the single-node kit's host address 10.199.0.1 by default); the chart's bundled API
server gets ``AWS_ENDPOINT_URL`` pointing there, so it lists the bucket and signs URLs for it, and the
worker pods read the images through those presigned URLs. The unmodified ``lightly==1.5.26`` client sets
the S3 datasources (``set_s3_config``, INPUT and LIGHTLY, under a prefix with a space) and schedules.

1. A LOCAL fleet (the images from a ConfigMap) and a bucket fleet of 2 (no ``input``, no ``lightly``: only
   token, /dev/shm, output and /tmp) run the same selection on the same images: the bucket run completes
   with the LOCAL run's selection; ``list_datasource_permissions()`` says the bucket may be listed, read
   and written; the bucket's secret key and presigned URLs' signatures are in no worker pod's spec or log.
2. A split run (``parallelism: 2``, shards of 10) on the bucket: each shard taken once, by both pods, and
   the same selection again.

Needs what tests/test_e2e_cluster.py needs plus moto[server]; skips with the reason without them, except
under ``CI=true``. The tests run in file order.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cluster import INPUT_CONFIGMAP, N_IMAGES, OPERATOR_SELECTOR, SELECTION, Stack, fleet, require
from e2e_fixtures import E2eS3
from lightly_devkit.data import dataset_files
from lightly_protocol import paths

pytest_plugins = ("e2e_fixtures",)

BUCKET = "e2e-bucket"
PREFIX = "datasets/street scenes/"  # keys under a prefix with a space
REGION = "us-east-1"
ACCESS_KEY = "AKIAE2EBUCKETFLEET01"
SECRET_KEY = "e2e-secret-access-key-never-in-a-pod"
S3_LABEL, LOCAL_LABEL = "e2e-s3", "e2e-local"
BUCKET_VOLUMES = {"lightly-token", "dshm", "output", "tmp"}
selections: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def bucket(stack: Stack, e2e_s3: E2eS3) -> Any:
    """The bucket with the e2e images under ``PREFIX/input/``; a boto3 client of it."""
    require(e2e_s3.missing)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=e2e_s3.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    s3.create_bucket(Bucket=BUCKET)
    for name, data in dataset_files(N_IMAGES).items():
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}input/{name}", Body=data)
    return s3


def bucket_fleet(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    body = fleet(name, replicas, labels=[S3_LABEL], **spec)
    del body["spec"]["input"]  # nothing to mount: the bucket is read through the API's presigned URLs
    return body


def s3_dataset(stack: Stack, name: str) -> str:
    client = stack.client
    client.create_dataset(name)
    for purpose, folder in (("INPUT", "input/"), ("LIGHTLY", "lightly/")):
        client.set_s3_config(
            resource_path=f"s3://{BUCKET}/{PREFIX}{folder}",
            region=REGION,
            access_key=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            purpose=purpose,
        )
    return client.dataset_id


def selected(stack: Stack, scheduled_id: str) -> list[str]:
    run = stack.client.get_compute_worker_run_from_scheduled_run(scheduled_id)
    tags = stack.client.get_compute_worker_run_tags(run.id)
    assert len(tags) == 1, tags
    names = stack.client.export_filenames_by_tag_name(tags[0].name).splitlines()
    assert len(names) == SELECTION["n_samples"] and len(set(names)) == len(names), names
    return sorted(names)


def schedule(stack: Stack, dataset: str, label: str, datapool: bool = False) -> str:
    """``datapool``: the run keeps its datapool in the LIGHTLY datasource (what a run writes back there)."""
    stack.client.set_dataset_id_by_name(dataset)
    worker_config = {"shutdown_when_job_finished": False, **({"use_datapool": True} if datapool else {})}
    return stack.client.schedule_compute_worker_run(
        worker_config=worker_config, selection_config=SELECTION, runs_on=[label]
    )


def test_a_fleet_without_volumes_selects_from_the_bucket_what_a_local_fleet_selects(stack: Stack, bucket: Any) -> None:
    local = fleet("local", 1, labels=[LOCAL_LABEL])
    assert local["spec"]["input"] == {"configMap": {"name": INPUT_CONFIGMAP}}
    stack.kube.apply([local, bucket_fleet("bucket", 2)], ns=stack.ns)
    local_ds, s3_ds = f"{stack.dataset}-local", f"{stack.dataset}-s3"
    stack.client.create_dataset(local_ds)
    stack.client.set_local_config(relative_path="", purpose="INPUT")
    stack.client.set_local_config(relative_path="", purpose="LIGHTLY")
    s3_dataset(stack, s3_ds)
    # the store answers the server's checks (list, read, write) through the unmodified client
    permissions = stack.client.list_datasource_permissions()
    assert permissions.get("can_list") and permissions.get("can_read") and permissions.get("can_write"), permissions

    for name, n in (("local", 1), ("bucket", 2)):
        stack.kube.wait_condition(
            stack.ns, f"lightlyworker/{name}", f"jsonpath={{.status.readyReplicas}}={n}", 300,
            operator_selector=OPERATOR_SELECTOR,
        )  # fmt: skip
    pods = stack.pods("bucket")
    assert len(pods) == 2
    for p in pods:
        assert {v["name"] for v in p["spec"]["volumes"]} == BUCKET_VOLUMES, p["spec"]["volumes"]
        mounts = {m["mountPath"] for m in p["spec"]["containers"][0]["volumeMounts"]}
        assert "/input_mount" not in mounts and "/lightly_mount" not in mounts, mounts

    sids = {"local": schedule(stack, local_ds, LOCAL_LABEL), "s3": schedule(stack, s3_ds, S3_LABEL, datapool=True)}
    datasets = {"local": local_ds, "s3": s3_ds}
    for key, sid in sids.items():
        # the client finds a scheduled run among its current dataset's (else CANCELED_OR_NOT_EXISTING)
        stack.client.set_dataset_id_by_name(datasets[key])
        stack.wait_completed(sid, timeout=600)
        selections[key] = selected(stack, sid)  # the run's tags are its dataset's
    assert selections["s3"] == selections["local"]
    assert set(selections["s3"]) <= {f"scene_{i:03d}.jpg" for i in range(N_IMAGES)}
    # what the worker writes to the LIGHTLY datasource lands in the bucket, under its prefix
    listed = bucket.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}lightly/").get("Contents", [])
    assert listed, "nothing was written under the LIGHTLY datasource's prefix"

    # the bucket's key never reaches a worker pod, and no log shows a presigned URL's signature
    for p in pods:
        assert SECRET_KEY not in str(p["spec"]) and ACCESS_KEY not in str(p["spec"])
        log = stack.kube.run("-n", stack.ns, "logs", p["metadata"]["name"]).stdout
        for secret in (SECRET_KEY, "X-Amz-Signature", "X-Amz-Credential"):
            assert secret not in log, f"{secret} in the log of {p['metadata']['name']}"


def test_a_split_run_reads_its_shards_from_the_bucket(stack: Stack, bucket: Any) -> None:
    """``parallelism: 2`` per run (a config over plain HTTP: the unmodified client refuses the key), shards of
    10 on the bucket fleet of 2: each shard taken once, shards on both pods, the unsplit run's selection."""
    if "s3" not in selections:
        pytest.skip("needs the unsplit bucket run of the test before")
    stack.client.set_dataset_id_by_name(f"{stack.dataset}-s3")
    ds = stack.client.dataset_id
    http = httpx.Client(base_url=stack.url, params={"token": stack.token}, timeout=30, trust_env=False)
    selection = {"nSamples": SELECTION["n_samples"], "strategies": SELECTION["strategies"]}
    docker = {"parallelism": 2, "shardSize": 10, "shutdownWhenJobFinished": False}
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": selection}}
    r = http.post(paths.CONFIGS, json=body)
    assert r.status_code == 201, r.text
    r = http.post(
        paths.dataset_schedule(ds), json={"configId": r.json()["id"], "priority": "MID", "runsOn": [S3_LABEL]}
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    stack.wait_completed(sid, timeout=600)

    r = http.get(paths.scheduled_shards(sid))
    assert r.status_code == 200, r.text
    plan = r.json()
    shards = plan["shards"]
    assert plan["total"] == N_IMAGES and len(shards) == N_IMAGES // 10, plan
    assert all(s["attempts"] == 1 and s["processed"] == s["stop"] - s["start"] for s in shards), shards
    holders = {s["workerId"] for s in shards}
    ids = {w["workerId"] for w in stack.lw("bucket")["status"]["workers"]}
    assert holders == ids and len(ids) == 2, (holders, ids)
    assert selected(stack, sid) == selections["s3"]
    stack.kube.run("-n", stack.ns, "delete", "lw", "local", "bucket", "--timeout=180s", timeout=200)
