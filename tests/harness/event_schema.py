"""The record schema of docs/events.md, for tests: the document is the single source.

docs/events.md holds the schema as the one ```json block under "## Schema";
tests validate what the agent writes against it (unit tier: records built by
the reporter; kernel tier: the agent's real output in the VM).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


@functools.lru_cache(maxsize=1)
def record_schema() -> Dict[str, Any]:
    text = EVENTS_DOC.read_text()
    section = text.split("\n## Schema\n", 1)
    if len(section) != 2:
        raise AssertionError(f"{EVENTS_DOC}: no '## Schema' section")
    blocks = re.findall(r"```json\n(.*?)\n```", section[1], flags=re.S)
    if len(blocks) != 1:
        raise AssertionError(f"{EVENTS_DOC}: expected one ```json block under '## Schema', found {len(blocks)}")
    return json.loads(blocks[0])


def schema_problems(records: Iterable[Dict[str, Any]]) -> List[str]:
    """Every way the records break the schema (empty when they all conform)."""
    import jsonschema  # noqa: PLC0415 - a test dependency only

    validator = jsonschema.Draft7Validator(record_schema())
    problems = []
    for record in records:
        definition = record_schema()["definitions"].get(str(record.get("type")))
        # validate against the record's own type for a readable message (oneOf hides it)
        own = {"definitions": record_schema()["definitions"], **definition} if definition else None
        target = jsonschema.Draft7Validator(own) if own else validator
        for error in target.iter_errors(record):
            where = "/".join(str(p) for p in error.absolute_path) or "(record)"
            problems.append(f"{record.get('type')} record, {where}: {error.message}: {json.dumps(record)[:300]}")
    return problems
