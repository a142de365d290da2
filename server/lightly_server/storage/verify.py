"""Access checks: what ``list_datasource_permissions()`` shows, and the scheduling check.

``verify`` lists the INPUT datasource (one key), writes a small test object under ``.lightly/`` of the
LIGHTLY datasource (the INPUT one when the dataset has no other), overwrites it, reads it back (or the
first listed input file when nothing could be written), and deletes it (best effort). Each check carries
the provider's own error. ``check_readable`` (scheduling) only lists and reads: it never writes.
"""

from __future__ import annotations

import contextlib
import secrets

from .base import Bucket
from .errors import StoreError
from .keys import LIGHTLY_FOLDER

VERIFY_OBJECT = LIGHTLY_FOLDER + "lightly-server-verify-"


def _first_key(bucket: Bucket) -> str | None:
    page = bucket.list_page(bucket.location.prefix, None, 10)
    return next((o.key for o in page.objects if not o.key.endswith("/")), None)


def verify(input_bucket: Bucket, output_bucket: Bucket) -> tuple[dict[str, bool], dict[str, str]]:
    """({canList, canRead, canWrite, canOverwrite}, {check: the provider's error})."""
    ok = {"canList": False, "canRead": False, "canWrite": False, "canOverwrite": False}
    errors: dict[str, str] = {}
    listed: str | None = None
    try:
        listed = _first_key(input_bucket)
        ok["canList"] = True
    except StoreError as exc:
        errors["canList"] = f"{exc.summary()} for {input_bucket.location}"
    test_key = output_bucket.location.key(VERIFY_OBJECT + secrets.token_hex(6))
    where = f"{output_bucket.location.scheme}://{output_bucket.location.bucket}/{test_key}"
    try:
        output_bucket.write(test_key, b"lightly-server verify\n")
        ok["canWrite"] = True
        try:
            output_bucket.write(test_key, b"lightly-server verify (overwritten)\n")
            ok["canOverwrite"] = True
        except StoreError as exc:
            errors["canOverwrite"] = f"{exc.summary()} for {where}"
    except StoreError as exc:
        errors["canWrite"] = f"{exc.summary()} for {where}"
        errors["canOverwrite"] = errors["canWrite"]
    read_bucket, read_key = (output_bucket, test_key) if ok["canWrite"] else (input_bucket, listed)
    if read_key is None:
        errors["canRead"] = (
            f"nothing to read: {input_bucket.location} lists no file and no test file could be written"
            if ok["canList"]
            else f"nothing to read: {input_bucket.location} cannot be listed and no test file could be written"
        )
    else:
        try:
            read_bucket.read(read_key, 0, 1)
            ok["canRead"] = True
        except StoreError as exc:
            errors["canRead"] = (
                f"{exc.summary()} for {read_bucket.location.scheme}://{read_bucket.location.bucket}/{read_key}"
            )
    if ok["canWrite"]:
        with contextlib.suppress(StoreError):  # may write, may not delete: the test object stays (documented)
            output_bucket.delete(test_key)
    return ok, errors


def check_readable(bucket: Bucket) -> None:
    """Raise the provider's StoreError unless the datasource can be listed and its first file read (a
    datasource that lists no file at all is refused too: a wrong bucket or prefix, most likely)."""
    first = _first_key(bucket)
    if first is None:
        raise StoreError(404, "NoFiles", "no file under this prefix (does the prefix exist?)")
    bucket.read(first, 0, 1)
