"""The sequential tool lookup gives the aggregate's answers: the right tool, the highest version,
and a failing provider skipped rather than failing the call."""

from fastmcp import Client, FastMCP
from fastmcp.server.providers import Provider

from servers.lookup import Server


class Broken(Provider):
    async def _list_tools(self):
        return []

    async def _get_tool(self, name, version=None):
        raise RuntimeError("this provider is down")


def build() -> Server:
    server = Server("root")
    server.add_provider(Broken())
    one, two = FastMCP("one"), FastMCP("two")

    @one.tool(version="1")
    def ping() -> str:
        return "one v1"

    @two.tool(name="ping", version="2")
    def ping_two() -> str:
        return "two v2"

    @two.tool
    def only_two() -> str:
        return "two"

    server.mount(one)
    server.mount(two)
    server.mount(one, namespace="a")
    return server


async def test_finds_tools_past_a_failing_provider_and_picks_the_highest_version():
    async with Client(build()) as client:
        assert (await client.call_tool("only_two")).data == "two"
        assert (await client.call_tool("ping")).data == "two v2"
        assert (await client.call_tool("a_ping")).data == "one v1"
        missing = await client.call_tool("nothing", raise_on_error=False)
        assert missing.is_error and "Unknown tool" in missing.content[0].text
