"""What the OpenAPI document shows beyond the types: examples of request bodies and of the error body, and the
request bodies of handlers that read the raw bytes themselves (HTTP ingest, CSV import).

The examples of request bodies live in pulse/web/routes/examples.py, by body type; `ExamplesPlugin` attaches them
to the type's schema. The test suite checks that every request body of the app has one that decodes into its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.typing import FieldDefinition

from pulse.web.errors import ErrorBody

ERROR_EXAMPLE = {"error": {"code": "validation_error", "message": "config.url: must be an http:// or https:// URL "
                           "with a host", "details": {"field": "config.url"}}}


def _number_unions(schema: Schema | Reference | None) -> None:
    """`float | int` becomes `number` alone: JSON Schema's oneOf refuses 30, which is a number and an integer."""
    if not isinstance(schema, Schema):
        return
    if schema.one_of and any(isinstance(s, Schema) and s.type == OpenAPIType.NUMBER for s in schema.one_of):
        schema.one_of = [s for s in schema.one_of if not (isinstance(s, Schema) and s.type == OpenAPIType.INTEGER)]
    for child in [*(schema.one_of or ()), *(schema.any_of or ()), *(schema.properties or {}).values()]:
        _number_unions(child)
    if isinstance(schema.items, Schema):
        _number_unions(schema.items)


class ExamplesPlugin(StructSchemaPlugin):
    """Litestar's schema for msgspec Structs, plus the example of the type when there is one."""

    def __init__(self, examples: dict[type, Any]) -> None:
        self.examples: dict[type, Any] = {ErrorBody: ERROR_EXAMPLE, **examples}

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        _number_unions(schema)
        example = self.examples.get(field_definition.type_)
        if example is not None:
            schema.examples = [example]
        return schema


def raw_body(media_type: str, schema: Schema, example: Any, description: str) -> type[Operation]:
    """An Operation class documenting the body of a handler that reads the raw request bytes itself."""

    @dataclass
    class RawBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                required=True, description=description,
                content={media_type: OpenAPIMediaType(schema=schema, examples={"example": Example(value=example)})})

    return RawBodyOperation


_JSON_VALUE = Schema(one_of=[Schema(type=OpenAPIType.NUMBER), Schema(type=OpenAPIType.BOOLEAN),
                             Schema(type=OpenAPIType.STRING)])
ENVELOPE = Schema(type=OpenAPIType.OBJECT, title="Envelope", description="docs/wire-format.md", properties={
    "seq": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "version": Schema(type=OpenAPIType.STRING, enum=["1"]),
    "ts": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
    "site_id": Schema(type=OpenAPIType.STRING),
    "metrics": Schema(type=OpenAPIType.OBJECT, additional_properties=_JSON_VALUE),
    "lat": Schema(type=OpenAPIType.NUMBER), "lng": Schema(type=OpenAPIType.NUMBER),
}, required=["seq"])
ENVELOPE_EXAMPLE = {"version": "1", "seq": 1042, "ts": "2026-11-23T09:00:00Z", "metrics": {"temp_c": -18.5,
                                                                                           "door": "closed"}}
BATCH = Schema(type=OpenAPIType.OBJECT, title="Batch", required=["messages"], properties={
    "messages": Schema(type=OpenAPIType.ARRAY, max_items=500, items=Schema(
        description="one message, an object: tenant_id, device_id, msg_type (telemetry or heartbeat), token (the "
                    "device's provision token) and message (the envelope). Each is judged on its own: an item "
                    "that is not such an object, or has a missing or wrong field, gets its own rejection in the "
                    "answer (and is quarantined) while the others are taken; so any JSON value is allowed here."))})
BATCH_EXAMPLE = {"messages": [{"tenant_id": "acme", "device_id": "freezer-7", "msg_type": "telemetry",
                               "token": "pt_Zt0q…", "message": ENVELOPE_EXAMPLE}]}
CSV_EXAMPLE = "device_id,name,site_id,device_type,tags,heartbeat_interval_s\n" \
              "freezer-7,Freezer 7,hq,freezer,cold-chain;kitchen,60\nfreezer-8,Freezer 8,hq,freezer,,\n"

ENVELOPE_BODY = raw_body("application/json", ENVELOPE, ENVELOPE_EXAMPLE, "one message: the JSON envelope")
BATCH_BODY = raw_body("application/json", BATCH, BATCH_EXAMPLE, "up to 500 messages of any devices")
CSV_BODY = raw_body("text/csv", Schema(type=OpenAPIType.STRING), CSV_EXAMPLE,
                    "UTF-8 CSV with a header row; device_id required")


def csv_answer(description: str, example: str) -> dict[int, ResponseSpec]:
    """The 200 answer of a handler that sends CSV (a Stream or text), documented as a string with an example."""
    return {200: ResponseSpec(data_container=str, media_type="text/csv", description=description,
                              generate_examples=False, examples=[Example(value=example)])}
