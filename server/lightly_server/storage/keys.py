"""Key rules: where a datasource's files live (``fullPath``), and which keys a listing or a URL may name.

A datasource's ``fullPath`` is ``scheme://bucket/prefix`` (``s3://``, ``gs://``, ``obs://``, ``azure://``;
the scheme may be left out: ``bucket/prefix``; Azure's is ``container/prefix``). File names on the wire are
relative to that prefix, ``/``-separated, without a leading ``/``. A name is refused (URL endpoints: 400) or
skipped (listings: logged with the reason) when it has a ``..`` part, a leading ``/`` or control characters.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from lightly_protocol.models import filename_problem

#: the scheme each datasource type's locations are shown with
SCHEMES = {"S3": "s3", "S3DelegatedAccess": "s3", "OBS": "obs", "GCS": "gs", "AZURE": "azure"}
#: Lightly's own folder in a datasource: left out of INPUT listings
LIGHTLY_FOLDER = ".lightly/"
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


@dataclass(frozen=True)
class Location:
    """A datasource's bucket and key prefix ('' or ending in '/')."""

    scheme: str
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def relative(self, key: str) -> str:
        return key[len(self.prefix) :]


def parse_location(kind: str, full_path: str) -> Location:
    """The bucket and prefix of ``fullPath``; ValueError with what to fix."""
    scheme = SCHEMES[kind]
    text = full_path.strip()
    m = re.match(r"^([a-z][a-z0-9+.-]*)://(.*)$", text)
    if m:
        given, text = m.group(1), m.group(2)
        accepted = {scheme, "gcs"} if scheme == "gs" else {scheme}
        if given not in accepted:
            raise ValueError(
                f"fullPath {full_path!r}: a {kind} datasource's path starts with {scheme}:// (or no scheme)"
            )
    bucket, _, prefix = text.partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"fullPath {full_path!r}: {bucket!r} is not a bucket (container) name")
    prefix = prefix.strip("/")
    problem = relative_key_problem(prefix) if prefix else None
    if problem:
        raise ValueError(f"fullPath {full_path!r}: its prefix {problem}")
    return Location(scheme, bucket, f"{prefix}/" if prefix else "")


def relative_key_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name relative to a datasource root, or None."""
    if not name:
        return "must not be empty"
    if name.startswith("/"):
        return "must be relative (no leading '/')"
    if any(part == ".." for part in name.split("/")):
        return "must not contain '..' parts"
    return filename_problem(name)


def shown(name: str) -> str:
    """A key as it may appear in a log line or a message: percent-escaped, at most 300 characters."""
    return urllib.parse.quote(name[:300], safe="/ ")
