"""What only the root gateway installs around its mounts: auth, scope policy, limits,
audit, metrics, tool schemas, tool search and client configs."""
