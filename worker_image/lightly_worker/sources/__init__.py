"""Where a run's files come from: a folder on the worker's mounts (LOCAL) or a bucket read through the API."""

from .access import RemoteAccess
from .base import (
    InputSource,
    ObjectMissing,
    ObjectTooLarge,
    SourceAccessError,
    StorageError,
    key_problem,
)
from .local import LocalSource, walk_folder
from .mirror import LightlyMirror, MirrorTooLarge
from .remote import ApiRefused, DatasourceApi, RemoteSource, datasource_label
from .store_http import StorePolicy, StoreTransport, UrlRefused, redact

__all__ = [
    "ApiRefused",
    "DatasourceApi",
    "InputSource",
    "LightlyMirror",
    "LocalSource",
    "MirrorTooLarge",
    "ObjectMissing",
    "ObjectTooLarge",
    "RemoteAccess",
    "RemoteSource",
    "SourceAccessError",
    "StorageError",
    "StorePolicy",
    "StoreTransport",
    "UrlRefused",
    "as_source",
    "datasource_label",
    "key_problem",
    "redact",
    "walk_folder",
]


def as_source(root: object) -> InputSource:
    """``root`` itself when it is a source, else the folder it names as a ``LocalSource``."""
    from pathlib import Path

    if isinstance(root, LocalSource | RemoteSource):
        return root
    if isinstance(root, str | Path):
        return LocalSource(Path(root))
    if isinstance(root, InputSource):
        return root
    raise TypeError(f"not an input source or folder: {type(root).__name__}")
