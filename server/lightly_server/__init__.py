"""Self-hosted API server speaking Lightly's REST protocol (lightly==1.5.26 ApiWorkflowClient)."""

__version__ = "0.1.0"
