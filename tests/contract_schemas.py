"""The committed JSON Schemas of docs/contract/schemas, as a validator in another program loads them: each
from its file, its relative references (a topic's schema to ``../change-event.json``) resolved from there."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from ops.contract_files import CONTRACT_DIR

SCHEMAS = CONTRACT_DIR / "schemas"


def _retrieve(uri: str) -> Resource:
    path = Path(unquote(urlparse(uri).path))
    return Resource.from_contents(json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT7)


REGISTRY: Registry = Registry(retrieve=_retrieve)


def validator(name: str) -> Draft7Validator:
    """The validator of ``schemas/<name>`` (checked to be a draft-07 schema first)."""
    path = SCHEMAS / name
    schema = {"$id": path.as_uri(), **json.loads(path.read_text(encoding="utf-8"))}
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=REGISTRY)
