"""The admin namespace: status and audit (server) and the runtime controls."""
