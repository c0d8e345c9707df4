"""How a chart is shown to MCP clients: as content blocks (the PNG and its one-line description),
and as an interactive result view for clients that render MCP apps (Prefab UI): the result as a
sortable, searchable table with its chart beside it.

The view carries the chart as a PNG data URI (the same picture ``sql_chart`` returns) and the
chart's data in the app state; the tool also returns the PNG and a one-line description as
ordinary content, for clients that do not render apps.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from mcp.types import ImageContent, TextContent

from servers.charts.render import Chart
from servers.results import Rows

if TYPE_CHECKING:
    from prefab_ui.app import PrefabApp

_PAGE_SIZE = 15


def result_view(table: Rows, chart: Chart) -> PrefabApp:
    """A Prefab app: title, description, then the table and the chart side by side."""
    # Prefab UI loads with the first view, not with the server (about 0.3 s of start-up).
    from prefab_ui.app import PrefabApp
    from prefab_ui.components import (
        Column,
        DataTable,
        DataTableColumn,
        Grid,
        Heading,
        Image,
        Muted,
    )

    keys = [f"c{i}" for i in range(len(table.columns))]  # column names may hold dots or spaces
    grid = DataTable(
        columns=[
            DataTableColumn(key=key, header=column.name, sortable=True)
            for key, column in zip(keys, table.columns, strict=True)
        ],
        rows=[dict(zip(keys, row, strict=True)) for row in table.rows],
        search=True,
        paginated=len(table.rows) > _PAGE_SIZE,
        page_size=_PAGE_SIZE,
    )
    picture = Image(
        src="data:image/png;base64," + base64.b64encode(chart.png).decode("ascii"),
        alt=chart.description,
        width="100%",
    )
    parts = [Heading(chart.data.title, level=2), Muted(chart.description)]
    parts.append(Grid(columns={"default": 1, "lg": 2}, gap=4, children=[grid, picture]))
    if table.truncated:
        parts.append(Muted(f"The table shows the first {table.row_count:,} rows. {table.hint}"))
    return PrefabApp(
        title=chart.data.title,
        view=Column(gap=4, children=parts),
        state={"chart": chart.data.model_dump(mode="json")},
    )


def chart_content(chart: Chart) -> list[ImageContent | TextContent]:
    """The chart as tool content: the PNG, then its one-line description."""
    image = base64.b64encode(chart.png).decode("ascii")
    return [
        ImageContent(type="image", data=image, mime_type="image/png"),
        TextContent(type="text", text=chart.description),
    ]
