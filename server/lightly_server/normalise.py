"""Start-up data migration: stored names that break the protocol's patterns are renamed.

Servers before 0.x accepted any worker, dataset and tag name of three or more characters; the real
client (and the real API) validate them against Lightly's patterns, so a single stored
``k8s.prod.ml.fleet.0`` made ``ApiWorkflowClient.get_compute_workers()`` raise for its user. On every
start (inside the schema migration's transaction and lock) each such name is rewritten, keeping
the object's id:

* an operator name of the old scheme ``k8s.<cluster>.<ns>.<name>.<i>`` becomes the operator's
  current name for the same replica (``lightly_protocol.names``), so the operator keeps its workers;
* any other name: every character outside the pattern becomes ``-``, a name that does not start
  with a letter or digit gets an ``x`` in front, a short one is padded to three characters;
* if the new name is taken (names are unique per user, tag names per dataset), ``-`` and the last
  six characters of the object's id are appended. For an operator name that means the operator had
  already re-registered the replica under its current name; it recognises such a duplicate and its
  orphan sweep removes it once no replica uses it.

Each rename is logged (WARNING) with the id, the old and the new name. Stored datasource configs
that break a pattern are only logged: they hold credentials and endpoints that must not be guessed.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from lightly_protocol.models import (
    IAM_ROLE_PATTERN,
    KMS_KEY_PATTERN,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    TAG_NAME_PATTERN,
    URL_PATTERN,
)
from lightly_protocol.names import migrated_worker_name, renamed_duplicate_name
from sqlalchemy import Connection, Table, select, update

from .schema import datasets, datasources, run_selections, tags, workers

log = logging.getLogger("lightly_server")

_NAME = re.compile(NAME_PATTERN)
_TAG = re.compile(TAG_NAME_PATTERN)
_NOT_NAME = re.compile(r"[^a-zA-Z0-9 _-]")
_NOT_TAG = re.compile(r"[^a-zA-Z0-9 .:;=@_-]")


def _valid(name: str, pattern: re.Pattern[str]) -> bool:
    return 3 <= len(name) <= MAX_NAME_LENGTH and bool(pattern.match(name))


def normalised_name(name: str, bad: re.Pattern[str] = _NOT_NAME) -> str:
    """A name inside the pattern that resembles ``name`` (see the module doc)."""
    out = bad.sub("-", name)[: MAX_NAME_LENGTH - 8]
    if not out[:1].isascii() or not out[:1].isalnum():
        out = "x" + out
    return out.ljust(3, "-")


def _rename(conn: Connection, table: Table, scope: str, pattern: re.Pattern[str], propose: Any, what: str) -> int:
    rows = conn.execute(select(table.c.id, table.c[scope], table.c.name)).all()
    taken = {(r[1], r.name) for r in rows}
    renamed = 0
    for r in rows:
        if _valid(r.name, pattern):
            continue
        new = propose(r.name)
        if not _valid(new, pattern):
            new = normalised_name(r.name, _NOT_NAME if pattern is _NAME else _NOT_TAG)
        if (r[1], new) in taken:
            new = renamed_duplicate_name(new, r.id)
        conn.execute(update(table).where(table.c.id == r.id).values(name=new))
        taken.discard((r[1], r.name))
        taken.add((r[1], new))
        renamed += 1
        log.warning(
            "renamed %s %s from %r to %r: Lightly's clients accept only %s", what, r.id, r.name, new, pattern.pattern
        )
    return renamed


def _datasource_problems(conn: Connection) -> None:
    checks = {
        "webServerLocation": re.compile(URL_PATTERN),
        "obsEndpoint": re.compile(URL_PATTERN),
        "s3ServerSideEncryptionKMSKey": re.compile(KMS_KEY_PATTERN),
        "s3ARN": re.compile(IAM_ROLE_PATTERN),
    }
    for r in conn.execute(select(datasources.c.id, datasources.c.dataset_id, datasources.c.config)):
        config = json.loads(r.config)
        for key, pattern in checks.items():
            value = config.get(key)
            if value is not None and not (isinstance(value, str) and pattern.match(value)):
                log.warning(
                    "datasource %s of dataset %s: %s %r breaks the pattern %s; the real client cannot read it "
                    "until it is set again (PUT /v1/datasets/%s/datasource)",
                    r.id,
                    r.dataset_id,
                    key,
                    value,
                    pattern.pattern,
                    r.dataset_id,
                )


def normalise_names(conn: Connection) -> int:
    """Rename every stored name outside its pattern; returns how many were renamed."""

    def worker(old: str) -> str:
        return migrated_worker_name(old) or normalised_name(old)

    n = _rename(conn, workers, "user_id", _NAME, worker, "worker")
    n += _rename(conn, datasets, "user_id", _NAME, normalised_name, "dataset")
    n += _rename(conn, tags, "dataset_id", _TAG, lambda old: normalised_name(old, _NOT_TAG), "tag")
    for r in conn.execute(select(run_selections.c.run_id, run_selections.c.tag_name)).all():
        if r.tag_name is not None and not _valid(r.tag_name, _TAG):
            new = normalised_name(r.tag_name, _NOT_TAG)
            conn.execute(update(run_selections).where(run_selections.c.run_id == r.run_id).values(tag_name=new))
            log.warning("renamed the pending selection tag of run %s from %r to %r", r.run_id, r.tag_name, new)
            n += 1
    _datasource_problems(conn)
    return n
