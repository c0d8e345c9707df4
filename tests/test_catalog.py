"""The client-visible catalog (tool names, schemas and annotations, resource URIs, prompts,
setting names) is what tests/fixtures/catalog.json records: a change to it is made on purpose,
by re-recording with `uv run python -m tests.catalog --record`, never as a side effect."""

import json

from tests.catalog import SNAPSHOT, live_catalog


async def test_the_catalog_is_the_recorded_one(data_dir):
    recorded = json.loads(SNAPSHOT.read_text())
    seen = json.loads(json.dumps(await live_catalog(data_dir)))
    for part in ("resources", "templates", "prompts", "settings"):
        assert seen[part] == recorded[part], part
    assert sorted(seen["tools"]) == sorted(recorded["tools"])
    changed = [name for name in recorded["tools"] if seen["tools"][name] != recorded["tools"][name]]
    assert not changed, f"schemas or annotations changed: {changed}"
