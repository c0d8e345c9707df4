"""Names that exist: every tool name, prompt name and resource URI that a description, the
instructions, a prompt's text, an error message or the README mentions is one a client of the
gateway can use as written."""

import re

import pytest
from fastmcp.exceptions import ToolError

from servers.settings import PROJECT_ROOT, GatewaySettings
from tests.conftest import wait_for_backend

NAMESPACES = ("sql", "pipelines", "admin", "demo")
# sql_query, pipelines_run_<name>; not a module path (servers.demo_backend) or a file name
TOOL_NAME = re.compile(rf"(?<![\w./-])(?:{'|'.join(NAMESPACES)})_[a-z0-9_]*(?:<name>)?(?![\w.])")
URI = re.compile(rf"\b(?:{'|'.join(NAMESPACES)})://[^\s`'\")\],]+")
PROMPT_ARGUMENTS = {"sql_answer_with_sql": {"question": "q"}, "demo_trip_facts": {
    "origin": "JFK", "destination": "LAX"}}  # fmt: skip


def template_pattern(template: str) -> re.Pattern[str]:
    """A URI template as a regex: {var} one path segment, {?a,b} an optional query."""
    body = re.sub(r"\{\?[^}]*\}", "", template)
    parts = re.split(r"(\{[^}]+\})", body)
    regex = "".join("[^/?]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex + r"(\?.*)?$")


class Catalog:
    def __init__(self, tools, prompts, resources, templates):
        self.names = {t.name for t in tools} | {p.name for p in prompts}
        self.uris = {str(r.uri) for r in resources}
        self.templates = [template_pattern(t.uri_template) for t in templates]
        self.template_texts = {t.uri_template for t in templates}

    def has_name(self, mentioned: str) -> bool:
        if mentioned.endswith("_"):  # a namespace, as in sql_*
            return any(n.startswith(mentioned) for n in self.names)
        if mentioned.endswith("<name>"):
            prefix = mentioned.removesuffix("<name>")
            return any(n.startswith(prefix) and n != prefix for n in self.names)
        return mentioned in self.names

    def has_uri(self, mentioned: str) -> bool:
        mentioned = mentioned.rstrip(".:;")
        return (
            mentioned in self.uris
            or mentioned in self.template_texts
            or any(p.match(mentioned) for p in self.templates)
        )

    def unknown(self, text: str) -> list[str]:
        names = [n for n in TOOL_NAME.findall(text) if not self.has_name(n)]
        uris = [u for u in URI.findall(text) if not self.has_uri(u)]
        return names + uris


def Client(server, **kwargs):  # noqa: N802 - a client that renders apps: it is shown every tool
    from fastmcp import Client as FastMCPClient
    from fastmcp.apps.config import UI_EXTENSION_ID
    from mcp.client import advertise

    apps = advertise(UI_EXTENSION_ID, {"mimeTypes": ["text/html;profile=mcp-app"]})
    return FastMCPClient(server, extensions=[apps], **kwargs)


@pytest.fixture(scope="module")
def everything_listed(data_dir):
    """The default gateway with its admin tools listed too, so their texts are checked (and
    its clients render apps, so they see sql_chart_view)."""
    from gateway import create_gateway

    return create_gateway(
        GatewaySettings.load(data_dir=data_dir, tool_search={"unlisted_namespaces": []})
    )


async def texts_and_catalog(client, instructions: str = "") -> tuple[dict, Catalog]:
    await wait_for_backend(client, "demo")
    tools = await client.list_tools()
    prompts = await client.list_prompts()
    resources = await client.list_resources()
    templates = await client.list_resource_templates()
    texts = {"instructions": instructions}
    for tool in tools:
        texts[f"tool {tool.name}"] = f"{tool.description}\n{tool.inputSchema}"
    for prompt in prompts:
        rendered = await client.get_prompt(prompt.name, PROMPT_ARGUMENTS.get(prompt.name, {}))
        texts[f"prompt {prompt.name}"] = "\n".join(
            [prompt.description or ""] + [getattr(m.content, "text", "") for m in rendered.messages]
        )
    for item in [*resources, *templates]:
        texts[f"resource {getattr(item, 'uri', None) or item.uri_template}"] = (
            item.description or ""
        )
    return texts, Catalog(tools, prompts, resources, templates)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_name_in_a_description_instruction_or_prompt_exists(everything_listed, mode):
    async with Client(everything_listed, mode=mode) as client:
        texts, catalog = await texts_and_catalog(client, everything_listed.instructions)
    unknown = {where: catalog.unknown(text) for where, text in texts.items()}
    assert not {where: names for where, names in unknown.items() if names}
    assert len(texts) > 25  # the check saw the whole catalog


async def test_every_name_the_readme_mentions_exists(everything_listed):
    readme = (PROJECT_ROOT / "README.md").read_text()
    async with Client(everything_listed) as client:
        _, catalog = await texts_and_catalog(client)
    assert not catalog.unknown(readme)
    assert len(TOOL_NAME.findall(readme)) > 20 and len(URI.findall(readme)) >= 4


async def test_names_in_answers_and_errors_exist(everything_listed):
    async with Client(everything_listed) as client:
        _, catalog = await texts_and_catalog(client)
        answer = await client.call_tool("sql_query", {"sql": "SELECT * FROM flights"})
        listed = await client.call_tool("pipelines_list_pipelines", {})
        errors = []
        for tool, arguments in [
            ("read_result", {"result_id": "x"}),
            ("run_carrier_delays", {}),
            ("sql_query", {"sql": "SELECT count(*) FROM range(10000000000) a, range(10) b"}),
        ]:
            try:
                await client.call_tool(tool, arguments)
            except ToolError as exc:
                errors.append(str(exc))
    texts = [answer.content[0].text, str(listed.structured_content), *errors]
    assert "Did you mean sql_read_result?" in errors[0]
    assert "pipelines_run_carrier_delays" in errors[1]
    assert "sql_read_result" in answer.structured_content["hint"]
    assert not [catalog.unknown(text) for text in texts if catalog.unknown(text)]
