"""The selection worker that runs inside every pod of a LightlyWorker fleet."""

__version__ = "0.1.0"
