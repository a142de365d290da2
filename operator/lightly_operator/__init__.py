"""The kopf operator that runs LightlyWorker fleets."""

__version__ = "0.1.0"
