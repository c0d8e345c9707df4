"""Helpers shared by the pipelines' summary nodes (not a pipeline: not in the registry)."""

from servers.lazy import lazy_module

pd = lazy_module("pandas")  # loaded when a summary node first runs


def plain_number(value: object, digits: int) -> float | None:
    """A plain rounded float for a summary, or None for a missing value."""
    if value is None or pd.isna(value):
        return None
    return round(float(value), digits)
