"""lightly_operator: filled in by its own issue."""
