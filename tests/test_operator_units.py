"""Unit tests of the operator's pure parts: spec defaults, builders, the plan, conditions, pod problems."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from lightly_operator.builders import (
    ANN_CHECKSUM,
    CredentialsError,
    build_ca_secret,
    build_pod,
    build_pull_secret,
    pod_name,
    spec_checksum,
    token_fingerprint,
    worker_args,
)
from lightly_operator.memo import FleetMemo
from lightly_operator.observe import CREATED_POD_MEMORY_SECONDS, with_created_pods
from lightly_operator.plan import plan
from lightly_operator.podmerge import merge_pod_spec
from lightly_operator.settings import OperatorSettings
from lightly_operator.spec import SpecError, parse_spec
from lightly_operator.status import Condition, PodView, merge_conditions, pod_problem

SETTINGS = OperatorSettings(api_url="http://api:8080", worker_image="worker:1", cluster_name="c1")
BODY = {"metadata": {"name": "fleet", "namespace": "ml", "uid": "u-1"}}


def spec(**extra):  # type: ignore[no-untyped-def]
    return parse_spec({"api": {"tokenSecretRef": {"name": "lightly-token"}}, **extra})


def pod(
    i: int, checksum: str = "c", phase: str = "Running", ready: bool = True, deleting: bool = False, problem=None
) -> PodView:  # type: ignore[no-untyped-def]
    return PodView(f"p{i}-{checksum}", i, checksum, f"w{i}", phase, ready, deleting, problem)


# ------------------------------------------------------------------ spec


def test_spec_defaults() -> None:
    s = spec()
    assert (s.replicas, s.labels, s.shm_size, s.update_strategy.type) == (1, [], "1024Mi", "WhenIdle")
    assert s.api.token_secret_ref.key == "token"
    assert s.deregistration.timeout_seconds == 300 and not s.autoscaling.enabled


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"replicas": -1}, "spec.replicas"),
        ({"updateStrategy": {"type": "Rolling"}}, "spec.updateStrategy.type"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not exceed"),
        ({"workerConfig": {"token": "x"}}, "workerConfig.token is set by the operator"),
        ({"env": [{"name": "LIGHTLY_TOKEN", "value": "x"}]}, "env LIGHTLY_TOKEN is set by the operator"),
        ({"shmSize": "lots"}, "spec.shmSize"),
        ({"replicaz": 2}, "spec.replicaz"),
    ],
)
def test_invalid_specs_name_the_field(extra: dict, needle: str) -> None:
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        spec(**extra)


# ------------------------------------------------------------------ builders


def test_pod_has_worker_id_token_file_gpu_shm_and_a_restrictive_security_context() -> None:
    s = spec(
        labels=["gpu"],
        workerConfig={"lightly.loader.batch_size": 64, "worker.labels": "[gpu]"},
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
        priorityClassName="batch",
        runtimeClassName="nvidia",
        input={"persistentVolumeClaim": {"claimName": "in"}},
        lightly={"persistentVolumeClaim": {"claimName": "meta"}},
    )
    p = build_pod(BODY, s, 2, "a" * 24, "0123456789abcdef", SETTINGS, "http://api:8080")
    c = p["spec"]["containers"][0]
    assert p["metadata"]["name"] == "fleet-2-012345"
    assert c["image"] == "worker:1"
    assert c["args"] == [
        f"worker.worker_id={'a' * 24}",
        "metrics.port=9100",
        "lightly.loader.batch_size=64",
        "worker.labels=[gpu]",
    ]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env == {"LIGHTLY_SERVER_LOCATION": "http://api:8080", "LIGHTLY_TOKEN_FILE": "/var/run/secrets/lightly/token"}
    # one GPU, and a floor of requests so the pod is never BestEffort
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "100m", "memory": "512Mi"}}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/input_mount"]["readOnly"] and "/lightly_mount" in mounts and "/home/output_dir" in mounts
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    assert vols["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Mi"}}
    assert vols["lightly-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert vols["output"] == {"name": "output", "emptyDir": {"sizeLimit": "20Gi"}}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert mounts["/tmp"]["name"] == "tmp" and vols["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}
    # the token Secret is mounted 0440 root:<fsGroup>: the worker's user must be in that group to read it
    pod_sc = p["spec"]["securityContext"]
    assert (pod_sc["runAsNonRoot"], pod_sc["runAsUser"], pod_sc["fsGroup"]) == (True, 10001, 10001)
    assert vols["lightly-token"]["secret"]["defaultMode"] == 0o440
    assert p["spec"]["automountServiceAccountToken"] is False
    assert (p["spec"]["nodeSelector"], p["spec"]["priorityClassName"], p["spec"]["runtimeClassName"]) == (
        {"gpu": "a100"},
        "batch",
        "nvidia",
    )
    owner = p["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LightlyWorker", "u-1", True)
    assert p["metadata"]["labels"]["lightly.ai/worker-index"] == "2"
    assert p["metadata"]["annotations"][ANN_CHECKSUM] == "0123456789abcdef"
    # the token is never in args or env values
    assert "token=" not in " ".join(c["args"])


def test_pod_template_overrides_merge_last() -> None:
    s = spec(
        podTemplate={
            "metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
            "spec": {"terminationGracePeriodSeconds": 900, "hostIPC": False},
        },
        resources={"limits": {"nvidia.com/gpu": 2, "memory": "32Gi"}},
        imagePullPolicy="Always",
        image="custom:2",
        imagePullSecrets=[{"name": "mine"}],
        registryCredentials={"secretRef": {"name": "creds"}},
    )
    p = build_pod(BODY, s, 0, "b" * 24, "f" * 16, SETTINGS, "http://x")
    assert p["metadata"]["labels"]["team"] == "ml" and p["metadata"]["annotations"]["a"] == "b"
    assert p["spec"]["terminationGracePeriodSeconds"] == 900 and p["spec"]["hostIPC"] is False
    c = p["spec"]["containers"][0]
    assert (c["image"], c["imagePullPolicy"], c["resources"]["limits"]["nvidia.com/gpu"]) == ("custom:2", "Always", "2")
    assert p["spec"]["imagePullSecrets"] == [{"name": "mine"}, {"name": "fleet-registry"}]


def test_pod_template_merges_like_a_strategic_merge_patch() -> None:
    assert merge_pod_spec({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "e": 2}) == {
        "a": {"b": 1, "c": [2]},  # an unkeyed list is replaced
        "d": 1,
        "e": 2,
    }
    # a template adds a volume, mounts it into the worker and sets a variable: the operator's own stay
    s = parse_spec(
        {
            "api": {"tokenSecretRef": {"name": "t"}},
            "podTemplate": {
                "spec": {
                    "volumes": [{"name": "certs", "configMap": {"name": "ca"}}],
                    "containers": [
                        {
                            "name": "worker",
                            "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
                            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
                            "resources": {"limits": {"memory": "8Gi"}},
                        }
                    ],
                }
            },
        }
    )
    p = build_pod(BODY, s, 0, "w" * 24, "c" * 16, SETTINGS, "http://api:8080")["spec"]
    (c,) = p["containers"]
    assert [v["name"] for v in p["volumes"]] == ["lightly-token", "dshm", "output", "tmp", "certs"]
    assert [m["mountPath"] for m in c["volumeMounts"]][-1] == "/certs" and len(c["volumeMounts"]) == 5
    assert [e["name"] for e in c["env"]] == ["LIGHTLY_SERVER_LOCATION", "LIGHTLY_TOKEN_FILE", "HTTPS_PROXY"]
    assert c["args"][0] == "worker.worker_id=" + "w" * 24 and c["image"] == "worker:1"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "8Gi"}


def test_with_a_ca_the_pods_trust_it_from_the_operators_secret(tmp_path: Path) -> None:
    from test_tls import _write_pki

    ca, _cert, _key = _write_pki(tmp_path)  # a real CA certificate: the settings check it
    settings = OperatorSettings(api_url="https://api:8443", worker_image="worker:1", ca_certs=str(ca))
    s = parse_spec({"api": {"tokenSecretRef": {"name": "t"}}})
    p = build_pod(BODY, s, 0, "w" * 24, "c" * 16, settings, "https://api:8443")["spec"]
    (c,) = p["containers"]
    assert {"name": "LIGHTLY_CA_CERTS", "value": "/var/run/secrets/lightly-ca/ca.crt"} in c["env"]
    assert {"name": "api-ca", "secret": {"secretName": "fleet-api-ca", "defaultMode": 0o444}} in p["volumes"]
    secret = build_ca_secret(BODY, ca.read_text())
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == ca.read_text()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == BODY["metadata"]["uid"]
    raw = {"api": {"tokenSecretRef": {"name": "t"}}}
    plain = spec_checksum(raw, "fp", SETTINGS, "http://x")
    assert spec_checksum(raw, "fp", SETTINGS, "http://x", "") == plain  # no CA: checksums as before
    assert spec_checksum(raw, "fp", SETTINGS, "http://x", "A") != spec_checksum(raw, "fp", SETTINGS, "http://x", "B")


def test_pull_secret_is_what_docker_login_json_key_stores() -> None:
    key = json.dumps({"type": "service_account", "private_key": "-----BEGIN"})
    s = build_pull_secret(BODY, "eu.gcr.io", key)
    assert s["type"] == "kubernetes.io/dockerconfigjson" and s["metadata"]["name"] == "fleet-registry"
    cfg = json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))
    entry = cfg["auths"]["eu.gcr.io"]
    assert (entry["username"], entry["password"]) == ("_json_key", key)
    assert base64.b64decode(entry["auth"]).decode() == f"_json_key:{key}"
    assert s["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    with pytest.raises(CredentialsError, match="not valid JSON"):
        build_pull_secret(BODY, "eu.gcr.io", "{not json")


def test_checksum_changes_with_pod_relevant_spec_and_token_only() -> None:
    base = {"api": {"tokenSecretRef": {"name": "t"}}, "image": "a"}
    fp = token_fingerprint({"token": "dG9rZW4x"}, "token")
    c0 = spec_checksum(base, fp, SETTINGS, "http://x")
    assert spec_checksum({**base, "replicas": 5, "autoscaling": {"enabled": True}}, fp, SETTINGS, "http://x") == c0
    assert spec_checksum({**base, "image": "b"}, fp, SETTINGS, "http://x") != c0
    assert spec_checksum(base, token_fingerprint({"token": "dG9rZW4y"}, "token"), SETTINGS, "http://x") != c0
    assert "dG9rZW4x" not in fp


def test_pod_names_fit_dns_labels() -> None:
    assert len(pod_name("x" * 80, 123, "abcdef0123")) == 63


# ------------------------------------------------------------------ the plan


def test_plan_registers_and_creates_from_nothing() -> None:
    p = plan(3, [], {}, set(), "c")
    assert (p.keep, p.register, p.create, p.delete, p.deregister) == ([0, 1, 2], [0, 1, 2], [0, 1, 2], [], [])


def test_scale_down_keeps_busy_and_removes_pending_then_idle() -> None:
    pods = {0: [pod(0)], 1: [pod(1)], 2: [pod(2, phase="Pending", ready=False)], 3: [pod(3)]}
    p = plan(2, [0, 1, 2, 3], pods, busy={3}, checksum="c")
    # pending replica 2 goes first, then the idle replica with the highest index (1); busy 3 stays
    assert p.keep == [0, 3]
    assert sorted(p.delete) == [("p1-c", "scaled down"), ("p2-c", "scaled down")]
    assert p.deregister == []  # only after the pods are gone
    gone = plan(2, [0, 1, 2, 3], {0: [pod(0)], 3: [pod(3)]}, busy={3}, checksum="c")
    assert gone.deregister == [1, 2]


def test_scale_down_waits_when_all_surplus_workers_are_busy() -> None:
    pods = {0: [pod(0)], 1: [pod(1)]}
    p = plan(0, [0, 1], pods, busy={0, 1}, checksum="c")
    assert p.keep == [0, 1] and p.delete == [] and sorted(p.waiting_busy) == [0, 1]
    forced = plan(0, [0, 1], pods, busy={0, 1}, checksum="c", strategy="Recreate")
    assert forced.keep == [] and len(forced.delete) == 2


def test_a_replica_scaled_down_stays_removed_when_its_worker_looks_busy_afterwards() -> None:
    """Replica 2's idle pod was deleted for a scale-down to 2. Later reconciles see its worker busy (a run
    taken in its last seconds, an old API view; an unreachable API makes everyone busy): 2 is still the
    one removed, no other pod is deleted in its place and its pod is never created again."""
    for busy in ({2}, {0, 1, 2}):
        ending = plan(2, [0, 1, 2], {0: [pod(0)], 1: [pod(1)], 2: [pod(2, deleting=True)]}, busy, "c")
        assert (ending.keep, ending.delete, ending.create, ending.deregister) == ([0, 1], [], [], [])
        gone = plan(2, [0, 1, 2], {0: [pod(0)], 1: [pod(1)]}, busy, "c")
        assert (gone.keep, gone.delete, gone.create, gone.deregister) == ([0, 1], [], [], [2])
    # a busy worker whose pod runs is still never removed under WhenIdle
    running = plan(2, [0, 1, 2], {0: [pod(0)], 1: [pod(1, deleting=True)], 2: [pod(2)]}, {2}, "c")
    assert running.keep == [0, 2] and running.deregister == [] and running.create == []


def test_a_pod_we_deleted_counts_as_terminating_until_the_index_shows_it() -> None:
    """The pods index lags behind our delete: the next reconcile still sees the pod alive. It counts as
    terminating, so that reconcile never picks another replica to remove (and later recreates this one)."""
    memo = FleetMemo()
    memo.deleted["p2-c"] = 100.0
    seen = with_created_pods([pod(0), pod(1), pod(2)], memo, 101.0)
    assert [p.deleting for p in seen] == [False, False, True]
    by_index = {p.index: [p] for p in seen}
    p = plan(2, [0, 1, 2], by_index, {2}, "c")  # its worker looks busy now
    assert (p.keep, p.delete, p.create) == ([0, 1], [], [])
    # the index shows it terminating, then gone: forgotten, so a new pod of the same name is not hidden
    assert with_created_pods([pod(0), pod(1), pod(2, deleting=True)], memo, 102.0)[2].deleting
    assert memo.deleted == {}
    memo.deleted["p1-c"] = 100.0
    assert [p.name for p in with_created_pods([pod(0)], memo, 102.0)] == ["p0-c"] and memo.deleted == {}
    assert not with_created_pods([pod(1)], memo, 103.0)[0].deleting
    # and remembered no longer than a created pod is
    memo.deleted["p1-c"] = 100.0
    assert not with_created_pods([pod(1)], memo, 100.0 + CREATED_POD_MEMORY_SECONDS)[0].deleting


def test_rollout_replaces_only_idle_workers_under_when_idle() -> None:
    pods = {0: [pod(0, "old")], 1: [pod(1, "old")]}
    p = plan(2, [0, 1], pods, busy={1}, checksum="new")
    assert p.delete == [("p0-old", "outdated spec; replacing")] and p.waiting_busy == [1]
    # the new pod of replica 0 comes only after the old one is gone
    terminating = plan(2, [0, 1], {0: [pod(0, "old", deleting=True)], 1: [pod(1, "old")]}, {1}, "new")
    assert terminating.create == [] and terminating.delete == []
    gone = plan(2, [0, 1], {1: [pod(1, "old")]}, {1}, "new")
    assert gone.create == [0]
    recreate = plan(2, [0, 1], pods, busy={1}, checksum="new", strategy="Recreate")
    assert len(recreate.delete) == 2


def test_failed_pods_are_replaced_and_backoff_blocks_creation() -> None:
    p = plan(1, [0], {0: [pod(0, phase="Failed", ready=False)]}, set(), "c")
    assert p.delete == [("p0-c", "pod failed; it will be recreated")]
    blocked = plan(1, [0], {}, set(), "c", blocked={0})
    assert blocked.create == [] and blocked.backing_off == [0]


def test_scale_up_fills_the_lowest_free_indices() -> None:
    p = plan(3, [0, 2], {0: [pod(0)], 2: [pod(2)]}, set(), "c")
    assert p.keep == [0, 1, 2] and p.register == [1] and p.create == [1]


# ------------------------------------------------------------------ status


def test_condition_transition_time_moves_only_on_status_flips() -> None:
    c1 = merge_conditions(None, [Condition("Ready", False, "PodsNotReady", "0/1")], 1, "T1")
    c2 = merge_conditions(c1, [Condition("Ready", False, "PodsNotReady", "0/1 still")], 2, "T2")
    c3 = merge_conditions(c2, [Condition("Ready", True, "AllReady", "1/1")], 2, "T3")
    assert (c1[0]["lastTransitionTime"], c2[0]["lastTransitionTime"], c3[0]["lastTransitionTime"]) == ("T1", "T1", "T3")
    assert c3[0] == {
        "type": "Ready",
        "status": "True",
        "reason": "AllReady",
        "message": "1/1",
        "lastTransitionTime": "T3",
        "observedGeneration": 2,
    }


def test_pod_problems_quote_the_cause_and_say_what_to_do() -> None:
    unsched = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    }
    reason, msg = pod_problem(unsched)
    assert reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in msg
    pull = {"containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "denied"}}}]}
    reason, msg = pod_problem(pull)
    assert reason == "ImagePullBackOff" and "registryCredentials" in msg
    crash = {
        "containerStatuses": [
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ]
    }
    assert pod_problem(crash)[0] == "CrashLoopBackOff" and "exit code 1" in pod_problem(crash)[1]
    assert pod_problem({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}) is None


def test_worker_names_round_trip() -> None:
    """More in test_worker_names.py."""
    name = SETTINGS.worker_name("ml", "fleet.v2", 7)
    assert name == "k8s_c1_ml_fleet__v2_7"
    ref = SETTINGS.parse_worker_name(name)
    assert ref is not None and (ref.namespace, ref.name, ref.index, ref.legacy) == ("ml", "fleet.v2", 7, False)
    legacy = SETTINGS.parse_worker_name("k8s.c1.ml.fleet.v2.7")
    assert legacy is not None and (legacy.namespace, legacy.name, legacy.index, legacy.legacy) == (
        "ml",
        "fleet.v2",
        7,
        True,
    )
    assert SETTINGS.parse_worker_name("k8s_other_ml_fleet_0") is None
    assert SETTINGS.parse_worker_name("k8s.other.ml.fleet.0") is None
    assert SETTINGS.parse_worker_name("my-laptop-worker") is None


def test_image_pull_failures_name_the_registry_and_what_to_check() -> None:
    from lightly_operator.status import PullErrors, pull_error_of, registry_host

    image = "10.199.0.1:5000/lightly/worker:1"
    err = (
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": pulling from host '
        "10.199.0.1:5000 failed with status code [manifests 1]: 401 Unauthorized"
    )
    pulling = {
        "containerStatuses": [{"image": image, "state": {"waiting": {"reason": "ErrImagePull", "message": err}}}]
    }
    backoff = {
        "containerStatuses": [
            {
                "image": image,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}},
            }
        ]
    }
    reason, msg = pod_problem(pulling)
    assert reason == "ErrImagePull" and msg.startswith(
        "401 Unauthorized from 10.199.0.1:5000: check registryCredentials"
    )
    # the back-off message hides the cause; the remembered ErrImagePull message explains it
    assert pod_problem(backoff, pull_error_of(pulling))[1].startswith("401 Unauthorized from 10.199.0.1:5000")
    assert "cannot pull" in pod_problem(backoff)[1] and "registryCredentials" in pod_problem(backoff)[1]
    missing = {
        "containerStatuses": [
            {"image": image, "state": {"waiting": {"reason": "ErrImagePull", "message": f"{image}: not found"}}}
        ]
    }
    assert "not found in 10.199.0.1:5000: check spec.image" in pod_problem(missing)[1]
    down = {
        "containerStatuses": [
            {
                "image": image,
                "state": {
                    "waiting": {
                        "reason": "ErrImagePull",
                        "message": "dial tcp 10.199.0.1:5000: connect: connection refused",
                    }
                },
            }
        ]
    }
    assert "10.199.0.1:5000 is unreachable" in pod_problem(down)[1]
    assert (registry_host("eu.gcr.io/p/w:1"), registry_host("lightly/worker:1"), registry_host("localhost/w:1")) == (
        "eu.gcr.io",
        "docker.io",
        "localhost",
    )
    remembered = PullErrors(limit=2)
    assert remembered.note("a", "e1") == "e1" and remembered.note("a", None) == "e1"
    remembered.note("b", "e2")
    remembered.note("c", "e3")
    assert remembered.note("a", None) is None and remembered.note("c", None) == "e3"


def test_recreate_fleets_hand_runs_back_at_once_on_sigterm() -> None:
    base = {"api": {"tokenSecretRef": {"name": "t"}}}
    when_idle = worker_args("w1", parse_spec(base))
    recreate = worker_args("w1", parse_spec({**base, "updateStrategy": {"type": "Recreate"}}))
    assert "worker.shutdown_grace_seconds=0" in recreate and not any("shutdown_grace" in a for a in when_idle)
    # workerConfig still wins
    own = parse_spec(
        {**base, "updateStrategy": {"type": "Recreate"}, "workerConfig": {"worker.shutdown_grace_seconds": 60}}
    )
    assert worker_args("w1", own)[-1] == "worker.shutdown_grace_seconds=60"
    # the strategy is in the pods' args, so it is pod-relevant
    fp = token_fingerprint({"token": "dG9rZW4x"}, "token")
    assert spec_checksum(base, fp, SETTINGS, "u") != spec_checksum(
        {**base, "updateStrategy": {"type": "Recreate"}}, fp, SETTINGS, "u"
    )


def test_settings_come_from_the_environment_only_through_from_env() -> None:
    env = {
        "LIGHTLY_SERVER_LOCATION": "http://api:9000",
        "LIGHTLY_WORKER_IMAGE": "w:2",
        "LIGHTLY_CLUSTER_NAME": "prod-eu",
        "LIGHTLY_OPERATOR_RESYNC_SECONDS": "0.5",
        "LIGHTLY_OPERATOR_SWEEP_SECONDS": "",  # set but empty: the default
        "LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS": "30",
    }
    s = OperatorSettings.from_env(env, namespaces=("ml",))
    assert (s.api_url, s.worker_image, s.cluster_name) == ("http://api:9000", "w:2", "prod-eu")
    assert (s.resync_seconds, s.sweep_seconds, s.offline_grace_seconds) == (0.5, 300.0, 30.0)
    assert s.namespaces == ("ml",)
    assert OperatorSettings.from_env({}) == OperatorSettings()  # the defaults, whatever os.environ holds


def test_handlers_are_registered_with_the_settings_intervals_not_at_import() -> None:
    import kopf
    from lightly_operator.handlers import register_handlers

    default = {h.id for h in kopf.get_default_registry()._spawning.get_all_handlers()}
    assert not default & {"reconcile_periodically", "sweep_orphans"}  # importing registered nothing
    registry = register_handlers(kopf.OperatorRegistry(), OperatorSettings(resync_seconds=0.3, sweep_seconds=7))
    timers = {h.id: h.interval for h in registry._spawning.get_all_handlers()}
    assert timers == {"reconcile_periodically": 0.3, "sweep_orphans": 7}


# ------------------------------------------------------------------ kopf state in memory


def test_kopf_state_lives_in_memory_and_writes_nothing() -> None:
    import kopf
    from lightly_operator.kopf_state import MemoryDiffBaseStorage, MemoryProgressStorage

    raw = {
        "metadata": {"name": "f", "namespace": "ml", "uid": "u-1", "annotations": {"lightly.ai/old": "x", "a": "b"}},
        "spec": {"replicas": 1},
        "status": {"phase": "Running"},
    }
    body, patch = kopf.Body(raw), kopf.Patch()
    diffbase = MemoryDiffBaseStorage()
    essence = diffbase.build(body=body)
    assert essence == {"metadata": {"annotations": {"a": "b"}}, "spec": {"replicas": 1}}
    assert diffbase.fetch(body=body) is None
    diffbase.store(body=body, patch=patch, essence=essence)
    assert diffbase.fetch(body=body) == essence
    progress = MemoryProgressStorage()
    progress.store(key=kopf.HandlerId("h"), record={"retries": 1}, body=body, patch=patch)
    assert progress.fetch(key=kopf.HandlerId("h"), body=body) == {"retries": 1}
    progress.purge(key=kopf.HandlerId("h"), body=body, patch=patch)
    assert progress.fetch(key=kopf.HandlerId("h"), body=body) is None
    assert not patch  # no annotations written
    # a retry still touches the object, so that the watch brings the event that retries the handler
    progress.touch(body=body, patch=patch, value="now")
    assert patch["metadata"]["annotations"]["lightly.ai/touch-dummy"] == "now"
    deleting = kopf.Body({**raw, "metadata": {**raw["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    diffbase.store(body=deleting, patch=kopf.Patch(), essence=essence)
    assert len(diffbase) == 0
