"""The Atoms session: the wire protocol, the connection thread, the uplink sender, the client."""
