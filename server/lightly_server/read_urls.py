"""Read URLs of a dataset's samples (tag exports, ``download_dataset``) and where they lead.

Every read URL of a sample is ``read_url``'s answer: this server's
``/v1/datasets/{datasetId}/samples/{sampleId}/readurlRedirect`` with ``expires`` and an HMAC ``signature``
(the artifact URL key, its own action, so no other signed URL of this server is one of these). What it
answers depends on the dataset's INPUT datasource when it is followed (``routes/samples.py``):

* LOCAL: the file's bytes from ``--local-datasource-root`` joined with the datasource's ``fullPath`` and
  the sample's name, only inside that folder (no ``..``, no symlink out of it), and a clear 404 when the
  server has no such root or cannot read the file;
* a bucket (S3, S3DelegatedAccess, GCS, AZURE, OBS): a 307 to a presigned GET URL of the object, signed
  at that moment for the rest of the URL's lifetime, so an export of many samples signs nothing up front
  and the bucket's keys never leave the server.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode

from .artifacts import ArtifactStore
from .errors import ApiError

SAMPLE_READ = "sample-read"
#: the longest ``expiresIn`` a read URL may ask for: 7 days, S3's limit for presigned URLs
MAX_EXPIRES_IN_S = 7 * 24 * 3600


def _signed_subject(dataset_id: str, sample_id: str) -> str:
    return f"{dataset_id}/{sample_id}"


def read_url(
    signer: ArtifactStore,
    base_url: str,
    dataset_id: str,
    datasource: dict[str, Any] | None,
    sample_id: str,
    expires_in: int | None = None,
) -> str:
    """A URL anyone holding it can read the sample's bytes from until it expires (``expires_in`` s,
    default: the server's signed-URL lifetime, at most ``MAX_EXPIRES_IN_S``)."""
    ttl = min(expires_in or signer.url_ttl_s, MAX_EXPIRES_IN_S)
    if datasource is None:
        raise no_datasource(dataset_id)
    expires = int(time.time()) + ttl
    signature = signer.sign(SAMPLE_READ, _signed_subject(dataset_id, sample_id), expires)
    return f"{base_url}{paths.sample_read_redirect(dataset_id, sample_id)}?expires={expires}&signature={signature}"


def no_datasource(dataset_id: str) -> ApiError:
    return ApiError(
        404,
        ApiErrorCode.DATASET_DATASOURCE_UNKNOWN,
        f"dataset {dataset_id} has no INPUT datasource, so its samples have no read URL; set one with "
        "PUT .../datasource",
    )


def datasource_location(datasource: dict[str, Any] | None, file_name: str) -> str:
    """``DATASOURCE_FULL``: the sample's location in its datasource (``fullPath`` joined with its name)."""
    if datasource is None:
        return file_name
    base = str(datasource.get("fullPath") or "").rstrip("/")
    return f"{base}/{file_name}" if base else file_name


def verify(signer: ArtifactStore, dataset_id: str, sample_id: str, expires: int, signature: str) -> None:
    if not signer.verify(SAMPLE_READ, _signed_subject(dataset_id, sample_id), expires, signature):
        raise ApiError(403, ApiErrorCode.FORBIDDEN, "the signed URL is invalid or expired; request a new one")


def local_file(root: Path | None, datasource: dict[str, Any], file_name: str) -> tuple[Path, str]:
    """(the readable regular file of a LOCAL datasource's sample, its media type); else a clear 404."""
    if root is None:
        raise ApiError(
            404,
            ApiErrorCode.NOT_FOUND,
            "this server cannot read LOCAL datasources: start it with --local-datasource-root (or "
            "LIGHTLY_SERVER_LOCAL_DATASOURCE_ROOT) set to the folder the workers mount",
        )
    where = f"{datasource.get('fullPath')}/{file_name}"
    try:
        base = (root / str(datasource.get("fullPath") or "")).resolve(strict=True)
        path = (base / file_name).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # missing, unreadable, a symlink loop (no server path in the answer)
        why = getattr(exc, "strerror", None) or "a symlink loop"
        raise ApiError(404, ApiErrorCode.NOT_FOUND, f"{where} cannot be read under the server's root: {why}") from None
    if not path.is_relative_to(base) or not path.is_file():
        raise ApiError(404, ApiErrorCode.NOT_FOUND, f"{where} is not a regular file inside the datasource's folder")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path, media_type
