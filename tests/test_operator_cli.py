"""The operator's command line: how its arguments become kopf's watch scope."""

from __future__ import annotations

from lightly_operator.cli import build_parser, watch_scope


def test_default_is_cluster_wide_with_an_empty_namespace_collection() -> None:
    # kopf's namespace observer iterates `namespaces` even cluster-wide: None crashes it
    args = build_parser().parse_args([])
    assert watch_scope(args.namespace) == {"clusterwide": True, "namespaces": ()}


def test_listed_namespaces_are_watched_alone() -> None:
    args = build_parser().parse_args(["--namespace", "a", "--namespace", "b"])
    assert watch_scope(args.namespace) == {"clusterwide": False, "namespaces": ("a", "b")}
