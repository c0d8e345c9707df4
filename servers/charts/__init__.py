"""Table-shaped results to pictures: plan, queries, points, render, view. No MCP inside."""
