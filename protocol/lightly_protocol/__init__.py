"""Wire models of the Lightly REST protocol (lightly==1.5.26), shared by server, worker and operator."""

PROTOCOL_CLIENT_VERSION = "1.5.26"
