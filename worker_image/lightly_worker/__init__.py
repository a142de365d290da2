"""The selection worker that runs inside every pod of a LightlyWorker fleet."""

import os

__version__ = "0.1.0"


def worker_version() -> str:
    """The version this worker reports to the API (``dockerVersion``) and writes into its reports.

    The image's version when its build set one (``docker build --build-arg WORKER_VERSION=1.2.3``
    becomes ``LIGHTLY_WORKER_VERSION``), so that a fleet rolled to a new tag shows the new version per
    worker; else the package's version.
    """
    return os.environ.get("LIGHTLY_WORKER_VERSION", "").strip() or __version__
