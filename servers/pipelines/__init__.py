"""Hamilton dataflows: the server, the registry, the pool of run worker processes and
what runs in them, the engines, the chart tool and the Redis task worker."""
