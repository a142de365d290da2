"""The operator's policy (pure): what a LightlyWorker may ask for, checked on the pod the operator builds."""

from __future__ import annotations

from typing import Any

import pytest
from lightly_operator.builders import build_pod
from lightly_operator.policy import FleetPolicy, check_fleet, image_registry, image_repository, secret_references
from lightly_operator.settings import OperatorSettings, SettingsError
from lightly_operator.spec import parse_spec

SETTINGS = OperatorSettings(api_url="http://lightly-server.lightly:8080", worker_image="ghcr.io/acme/worker:1.2")
BODY = {"metadata": {"name": "fleet", "namespace": "ml", "uid": "u1"}}


def pod_of(settings: OperatorSettings = SETTINGS, url: str = "http://x", **spec: Any) -> dict[str, Any]:
    s = parse_spec({"api": {"tokenSecretRef": {"name": "t"}}, **spec})
    return build_pod(BODY, s, 0, "w" * 24, "c" * 16, settings, url)["spec"]


def problems(settings: OperatorSettings = SETTINGS, url: str | None = None, **spec: Any) -> list[str]:
    raw = {"api": {"tokenSecretRef": {"name": "t"}}, **spec}
    url = url or settings.api_url
    return check_fleet(raw, url, pod_of(settings, url, **spec), settings.policy)


def test_the_operators_own_pod_passes_its_policy() -> None:
    assert problems() == []
    assert problems(image="ghcr.io/acme/worker:2.0") == []
    assert problems(image="ghcr.io/acme/worker@sha256:" + "a" * 64) == []


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"image": "ghcr.io/acme/worker-evil:1"}, "image ghcr.io/acme/worker-evil:1 is not an allowed image"),
        ({"podTemplate": {"spec": {"hostNetwork": True}}}, "hostNetwork: true is not allowed"),
        ({"podTemplate": {"spec": {"hostPID": True}}}, "hostPID: true is not allowed"),
        ({"input": {"hostPath": {"path": "/data"}}}, "volume input: hostPath is not allowed"),
        (
            {"podTemplate": {"spec": {"volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}]}}},
            "volume etc: hostPath",
        ),
        ({"serviceAccountName": "admin"}, "serviceAccountName admin is not allowed"),
        ({"podTemplate": {"spec": {"serviceAccountName": "admin"}}}, "serviceAccountName admin is not allowed"),
        ({"podTemplate": {"spec": {"automountServiceAccountToken": True}}}, "automountServiceAccountToken"),
        ({"podTemplate": {"spec": {"securityContext": {"runAsUser": 0}}}}, "runAsUser: 0 (root) is not allowed"),
        (
            {
                "podTemplate": {
                    "spec": {
                        "containers": [
                            {"name": "w", "image": "ghcr.io/acme/worker:1", "securityContext": {"privileged": True}}
                        ]
                    }
                }
            },
            "privileged: true is not allowed",
        ),
        (
            {"podTemplate": {"spec": {"containers": [{"name": "worker", "image": "busybox"}]}}},
            "containers[worker].image busybox is not an allowed image",
        ),
        (
            {
                "podTemplate": {
                    "spec": {
                        "initContainers": [
                            {
                                "name": "x",
                                "image": "ghcr.io/acme/worker:1.2",
                                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                            }
                        ]
                    }
                }
            },
            "capabilities.add ['SYS_ADMIN'] is not allowed",
        ),
        ({"registryCredentials": {"registry": "evil.example", "secretRef": {"name": "k"}}}, "registry evil.example"),
        (
            {"podTemplate": {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}},
            "seccompProfile Unconfined",
        ),
        (
            {"podTemplate": {"spec": {"containers": [{"name": "worker", "command": ["sh", "-c", "curl evil"]}]}}},
            "containers[worker].command is not allowed",
        ),
        (
            {
                "podTemplate": {
                    "spec": {
                        "containers": [
                            {"name": "worker", "env": [{"name": "LIGHTLY_SERVER_LOCATION", "value": "http://evil"}]}
                        ]
                    }
                }
            },
            "env LIGHTLY_SERVER_LOCATION must stay http://lightly-server.lightly:8080",
        ),
        (
            {
                "podTemplate": {
                    "spec": {
                        "containers": [
                            {
                                "name": "w",
                                "image": "ghcr.io/acme/worker:1",
                                "ports": [{"containerPort": 80, "hostPort": 80}],
                            }
                        ]
                    }
                }
            },
            "hostPort [80] is not allowed",
        ),
    ],
)
def test_each_escalation_is_refused_with_the_field_and_what_to_do(spec: dict[str, Any], words: str) -> None:
    found = problems(**spec)
    assert len(found) == 1 and words in found[0], found
    assert "chart value policy." in found[0] or "remove" in found[0] or "use " in found[0], found


def test_the_api_url_must_be_allowed() -> None:
    assert "spec.api.url http://attacker.example is not an allowed" in problems(url="http://attacker.example")[0]
    wide = OperatorSettings(api_url="http://a:8080", allowed_api_urls=("https://lightly.internal/",))
    assert problems(wide, url="https://lightly.internal/team-a") == []
    assert problems(wide, url="https://lightly.internal.attacker.example") != []
    assert problems(wide, url="http://a:8080") != []  # a list given: only what it names
    anything = OperatorSettings(allowed_api_urls=("*",))
    assert problems(anything, url="http://anywhere:1") == []


def test_the_settings_can_allow_each_thing() -> None:
    lax = OperatorSettings(
        worker_image="ghcr.io/acme/worker:1.2",
        allowed_images=("*",),
        allowed_service_accounts=("gpu-runner",),
        allow_host_path=True,
        allow_host_namespaces=True,
        allow_privileged=True,
    )
    spec = {
        "image": "anything:1",
        "serviceAccountName": "gpu-runner",
        "input": {"hostPath": {"path": "/data"}},
        "podTemplate": {
            "spec": {"hostNetwork": True, "containers": [{"name": "worker", "securityContext": {"privileged": True}}]}
        },
    }
    assert problems(lax, url=lax.api_url, **spec) == []


def test_image_names() -> None:
    assert image_repository("ghcr.io/acme/worker:1.2") == "ghcr.io/acme/worker"
    assert image_repository("localhost:5000/w@sha256:abc") == "localhost:5000/w"
    assert image_repository("localhost:5000/w:dev") == "localhost:5000/w"
    assert image_repository("busybox") == "busybox"
    assert image_registry("localhost:5000/w:dev") == "localhost:5000"
    assert image_registry("ghcr.io/acme/worker") == "ghcr.io"
    assert image_registry("acme/worker:1") == "docker.io" and image_registry("busybox") == "docker.io"
    policy = FleetPolicy.defaults_for("http://a", "localhost/lwf/worker:dev")
    assert policy.image_allowed("localhost/lwf/worker:v2") and not policy.image_allowed("localhost/lwf/worker-x:1")
    assert policy.registries == ("eu.gcr.io", "localhost")


def test_secret_references_are_all_found() -> None:
    pod = pod_of(
        env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}],
        imagePullSecrets=[{"name": "s4"}],
    )
    assert {name for name, _ in secret_references(pod)} == {"t", "s1", "s4"}  # t: the token Secret's volume
    # podTemplate's lists merge into the operator's by name (a strategic merge): what counts is the result
    pod = pod_of(
        podTemplate={
            "spec": {
                "containers": [{"name": "worker", "envFrom": [{"secretRef": {"name": "s2"}}]}],
                "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "s3"}}]}}],
            }
        },
    )
    assert {name for name, _ in secret_references(pod)} == {"t", "s2", "s3"}


def test_policy_settings_from_the_environment() -> None:
    s = OperatorSettings.from_env(
        {
            "LIGHTLY_OPERATOR_ALLOWED_API_URLS": "http://a:8080, https://b/",
            "LIGHTLY_OPERATOR_ALLOWED_IMAGES": "",
            "LIGHTLY_OPERATOR_ALLOW_HOST_PATH": "true",
            "LIGHTLY_OPERATOR_SECRET_LABEL": "",
        }
    )
    assert s.allowed_api_urls == ("http://a:8080", "https://b/") and s.allowed_images == ()
    assert s.allow_host_path is True and s.allow_privileged is False and s.secret_label == ""
    with pytest.raises(SettingsError, match="LIGHTLY_OPERATOR_ALLOW_PRIVILEGED='maybe': use true or false"):
        OperatorSettings.from_env({"LIGHTLY_OPERATOR_ALLOW_PRIVILEGED": "maybe"})


def test_an_empty_image_or_name_is_refused_by_the_spec() -> None:
    from lightly_operator.spec import SpecError

    for field in ("image", "serviceAccountName", "priorityClassName", "runtimeClassName"):
        with pytest.raises(SpecError, match=f"spec.{field}"):
            parse_spec({"api": {"tokenSecretRef": {"name": "t"}}, field: ""})
