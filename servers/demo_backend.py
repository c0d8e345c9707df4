"""The bundled demo remote backend: travel arithmetic that pairs well with the flights data.

A small standalone MCP server that the gateway proxies by default (as a stdio subprocess). It has
real tools (unit conversion, great-circle distance, time-zone conversion, a slow countdown that
reports progress), resources and a prompt. Run alone: ``uv run python -m servers.demo_backend``
(stdio) or ``... --transport http --port 8010``.
"""

import asyncio
import math
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

PURE = ToolAnnotations(readOnlyHint=True, openWorldHint=False, idempotentHint=True)
EARTH_RADIUS_KM = 6371.0088

# Factors to a base unit per dimension; temperature is handled separately.
_UNITS = {
    "distance": {"km": 1.0, "mi": 1.609344, "nmi": 1.852, "m": 0.001, "ft": 0.0003048},
    "speed": {"kmh": 1.0, "mph": 1.609344, "kn": 1.852, "ms": 3.6},
    "mass": {"kg": 1.0, "lb": 0.45359237},
}
_TEMPERATURE = ("C", "F", "K")


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert value between two units of the same dimension."""
    if from_unit in _TEMPERATURE and to_unit in _TEMPERATURE:
        kelvin = {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[from_unit]
        return {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[to_unit]
    for factors in _UNITS.values():
        if from_unit in factors and to_unit in factors:
            return value * factors[from_unit] / factors[to_unit]
    raise ValueError(
        f"cannot convert {from_unit!r} to {to_unit!r}; both must be one dimension: "
        + "; ".join(f"{dim}: {', '.join(f)}" for dim, f in _units_by_dimension().items())
    )


def _units_by_dimension() -> dict[str, list[str]]:
    return {**{dim: list(f) for dim, f in _UNITS.items()}, "temperature": list(_TEMPERATURE)}


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance between two points on Earth, in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def create_server(settings: object = None) -> FastMCP:
    """The demo backend (settings are accepted for symmetry and ignored)."""
    mcp = FastMCP(
        "demo",
        instructions="Travel arithmetic: unit conversion, great-circle distances, time zones.",
    )

    @mcp.tool(annotations=PURE)
    def convert_units(
        value: float,
        from_unit: Annotated[str, Field(description="e.g. mi, km, nmi, mph, kn, F, C, lb")],
        to_unit: Annotated[str, Field(description="Same dimension as from_unit.")],
    ) -> dict:
        """Convert a distance, speed, mass or temperature; returns value and unit."""
        try:
            result = convert(value, from_unit, to_unit)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return {"value": round(result, 6), "unit": to_unit}

    @mcp.tool(annotations=PURE)
    def distance(
        lat1: Annotated[float, Field(ge=-90, le=90)],
        lon1: Annotated[float, Field(ge=-180, le=180)],
        lat2: Annotated[float, Field(ge=-90, le=90)],
        lon2: Annotated[float, Field(ge=-180, le=180)],
    ) -> dict:
        """Great-circle distance between two points in degrees; returns km, mi and nmi."""
        km = great_circle_km(lat1, lon1, lat2, lon2)
        return {"km": round(km, 3), "mi": round(km / 1.609344, 3), "nmi": round(km / 1.852, 3)}

    @mcp.tool(annotations=PURE)
    def convert_time(
        time: Annotated[str, Field(description="ISO 8601 local time, e.g. 2013-01-01T05:15")],
        from_zone: Annotated[str, Field(description="IANA zone, e.g. America/New_York")],
        to_zone: Annotated[str, Field(description="IANA zone")],
    ) -> dict:
        """Convert a local time between IANA time zones; returns time and UTC offset."""
        try:
            moment = datetime.fromisoformat(time).replace(tzinfo=ZoneInfo(from_zone))
            converted = moment.astimezone(ZoneInfo(to_zone))
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ToolError(f"cannot convert: {exc}. Use ISO 8601 and IANA zone names.") from None
        return {
            "time": converted.replace(tzinfo=None).isoformat(),
            "zone": to_zone,
            "utc_offset": converted.strftime("%z"),
        }

    @mcp.tool(annotations=PURE)
    async def countdown(
        seconds: Annotated[int, Field(ge=1, le=30)],
        ctx: Context,
    ) -> str:
        """Count down seconds with progress reports (to test long calls)."""
        for done in range(seconds):
            await ctx.report_progress(done, seconds, f"{seconds - done} s left")
            await asyncio.sleep(1)
        await ctx.report_progress(seconds, seconds, "done")
        return f"counted down {seconds} s"

    @mcp.resource("demo://units", mime_type="application/json")
    def units() -> dict:
        """The units convert_units understands, by dimension."""
        return _units_by_dimension()

    @mcp.resource("demo://zones/{region}", mime_type="application/json")
    def zones(region: Literal["America", "Europe", "Asia", "Pacific"]) -> list[str]:
        """Common IANA time-zone names in a region."""
        return sorted(z for z in _COMMON_ZONES if z.startswith(region + "/"))

    @mcp.prompt
    def trip_facts(origin: str, destination: str) -> str:
        """Ask for the distance, flight time and time difference between two airports."""
        return (
            f"For a flight from {origin} to {destination}: look up both airports' coordinates "
            "and time zones, give the great-circle distance in miles and km (this server's "
            "distance tool), and the local arrival time for a 09:00 departure (its time "
            "conversion tool)."
        )

    return mcp


_COMMON_ZONES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Anchorage", "America/Phoenix", "America/Puerto_Rico", "Europe/London",
    "Europe/Paris", "Europe/Berlin", "Asia/Tokyo", "Asia/Singapore", "Pacific/Honolulu",
)  # fmt: skip


if __name__ == "__main__":
    from servers.standalone import run_alone

    run_alone(create_server)
