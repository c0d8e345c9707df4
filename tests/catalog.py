"""What a client can see of the default gateway, in a form to compare across changes: every
tool's name, schemas and annotations, every resource URI and template, every prompt and its
arguments, and every setting's environment name.

    uv run python -m tests.catalog --record   # rewrite tests/fixtures/catalog.json on purpose
"""

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from fastmcp import Client
from pydantic import BaseModel

from servers.sample_data import ensure_sample_database
from servers.settings import GatewaySettings

SNAPSHOT = Path(__file__).parent / "fixtures" / "catalog.json"


def setting_names(model: type[BaseModel], prefix: str = "GATEWAY_") -> list[str]:
    """The environment name of every leaf setting, nested models spelled with `__`."""
    names = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += setting_names(kind, f"{prefix}{name.upper()}__")
        else:
            names.append(prefix + name.upper())
    return sorted(names)


async def catalog(client: Client) -> dict:
    tools = await client.list_tools()
    resources = await client.list_resources()
    templates = await client.list_resource_templates()
    prompts = await client.list_prompts()
    return {
        "tools": {
            tool.name: {
                "input": tool.input_schema,
                "output": tool.output_schema,
                "annotations": tool.annotations.model_dump(exclude_none=True)
                if tool.annotations
                else None,
            }
            for tool in sorted(tools, key=lambda t: t.name)
        },
        "resources": sorted(str(r.uri) for r in resources),
        "templates": sorted(t.uri_template for t in templates),
        "prompts": {
            p.name: sorted(a.name for a in p.arguments or []) for p in sorted(prompts, key=str)
        },
        "settings": setting_names(GatewaySettings),
    }


async def live_catalog(data_dir: Path, mode: str = "legacy", timeout_s: float = 90) -> dict:
    """The default gateway's catalog once its demo backend is up."""
    from gateway import create_gateway

    gateway = create_gateway(GatewaySettings.load(data_dir=data_dir))
    async with Client(gateway, mode=mode) as client:
        async with asyncio.timeout(timeout_s):
            while True:
                status = (await client.call_tool("admin_status", {})).structured_content
                if status["backends"]["demo"]["status"] == "up":
                    break
                await asyncio.sleep(0.2)
        return await catalog(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="rewrite the snapshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        ensure_sample_database(Path(directory))
        seen = asyncio.run(live_catalog(Path(directory)))
    text = json.dumps(seen, indent=1, sort_keys=True) + "\n"
    if args.record:
        SNAPSHOT.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
