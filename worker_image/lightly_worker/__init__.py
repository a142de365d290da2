"""lightly_worker: filled in by its own issue."""
