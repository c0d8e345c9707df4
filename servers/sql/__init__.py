"""DuckDB, read-only: the server, its hardened engine, the statement gate, queries and
stored results, the catalog, canned queries and the chart tools."""
