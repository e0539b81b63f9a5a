"""Bodies read as a Spring/Jackson client sends them (the seeds' clients): unknown fields are ignored
and `null` is a field left out, at every nesting level.

`SeedBody` is the base of every seed route's request model (scenes, articles, the seed's desk
body); v1's models stay strict (`extra="forbid"`). Its JSON schema says so: `additionalProperties:
true`, every optional field may be null, and the description says the body is read leniently.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from serve_app.requests import LoraSelection

#: What the OpenAPI document says of a lenient body (the start of its description).
LENIENT = (
    "Read leniently, as a Spring/Jackson client sends it: unknown fields are ignored and null is a field left out "
    "(at every level). "
)


def left_out_nulls(data: Any, blank: Collection[str] = ()) -> Any:
    """`data` without its null fields (and without the fields of `blank` that are `""`): what a
    Jackson client sends for a field it has no value of is the field left out."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if v is not None and not (k in blank and v == "")}


def _nullable(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "null" or any(branch.get("type") == "null" for branch in prop.get("anyOf", []))


def lenient_schema(schema: dict[str, Any], *, everything_optional: bool = False) -> dict[str, Any]:
    """`schema` (an object's JSON schema, changed in place and returned) as a lenient body's: unknown
    properties allowed, every optional property (every one with `everything_optional`) nullable, and
    the description starting with `LENIENT`."""
    required = set() if everything_optional else set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if name in required or _nullable(prop):
            continue
        branch = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
        kept = {k: prop[k] for k in ("title", "description", "default") if k in prop}
        schema["properties"][name] = {"anyOf": [branch, {"type": "null"}], **kept}
    schema["additionalProperties"] = True
    description = schema.get("description", "")
    if not description.startswith(LENIENT):
        schema["description"] = LENIENT + description
    return schema


class SeedBody(BaseModel):
    """A seed route's body (or a part of one): unknown fields ignored, null as left out."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_left_out(cls, data: Any) -> Any:
        return left_out_nulls(data)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        lenient_schema(handler.resolve_ref_schema(json_schema))
        return json_schema


class SeedLoraSelection(LoraSelection, SeedBody):
    """`LoraSelection` (the same fields and ranges), read leniently: the seed routes' `lora`."""

    model_config = ConfigDict(extra="ignore")
