"""Remote MCP servers: the provider that offers them all, one backend with its circuit,
the connections (links), catalogs, names and the relay of server-initiated requests."""
