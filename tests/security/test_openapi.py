"""The OpenAPI document at /schema/openapi.json: every operation has typed answers, every request body an example
that the API itself accepts as its type, and every guarded route declares how it is authenticated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pulse.web.routes.examples import request_examples
from tests.security.inventory import ENDPOINTS

Client = AsyncTestClient[Litestar]
METHODS = ("get", "post", "put", "patch", "delete")
NOT_DOCUMENTED = {("GET", "/healthz"), ("GET", "/readyz"),  # probes
                  ("GET", "/app"), ("GET", "/app/{path}")}  # the web app's pages and assets


@pytest.fixture(scope="module")
async def document(api: Client) -> dict[str, Any]:
    response = await api.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")
    return response.json()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def has_example(document: dict[str, Any], media: dict[str, Any]) -> bool:
    if media.get("example") is not None or media.get("examples"):
        return True
    pending = [media.get("schema") or {}]
    while pending:
        schema = resolve(document, pending.pop())
        if schema.get("examples") or schema.get("example") is not None:
            return True
        pending += schema.get("oneOf", []) + schema.get("anyOf", [])
    return False


def is_typed(document: dict[str, Any], schema: dict[str, Any] | None) -> bool:
    if not schema:
        return False
    schema = resolve(document, schema)
    return bool(schema.get("type") or schema.get("oneOf") or schema.get("anyOf") or schema.get("properties"))


def test_every_route_is_in_the_document(document: dict[str, Any]) -> None:
    documented = {(m, p) for m, p, _ in operations(document)}
    expected = {(e.method, e.path) for e in ENDPOINTS
                if e.method != "WS" and e.kind != "docs" and (e.method, e.path) not in NOT_DOCUMENTED}
    assert expected - documented == set(), f"routes missing from /schema: {sorted(expected - documented)}"
    assert documented - expected == set(), f"documented routes the app does not serve: {documented - expected}"


def test_every_operation_has_typed_answers(document: dict[str, Any]) -> None:
    problems = []
    for method, path, operation in operations(document):
        responses = operation.get("responses", {})
        success = [s for s in responses if s.startswith("2")]
        if not success:
            problems.append(f"{method} {path}: no 2xx answer documented")
        for status, response in responses.items():
            if status == "204":
                continue
            content = response.get("content") or {}
            if not content:
                problems.append(f"{method} {path} {status}: no content")
            for media_type, media in content.items():
                if not is_typed(document, media.get("schema")):
                    problems.append(f"{method} {path} {status} {media_type}: untyped")
        if not operation.get("summary"):
            problems.append(f"{method} {path}: no summary")
    assert not problems, "\n".join(problems)


def test_every_request_body_is_typed_and_has_an_example(document: dict[str, Any]) -> None:
    problems = []
    bodies = 0
    for method, path, operation in operations(document):
        body = operation.get("requestBody")
        if body is None:
            assert method not in ("PUT", "PATCH"), f"{method} {path} documents no request body"
            continue
        bodies += 1
        for media_type, media in body["content"].items():
            if not is_typed(document, media.get("schema")):
                problems.append(f"{method} {path} {media_type}: untyped body")
            if not has_example(document, media):
                problems.append(f"{method} {path} {media_type}: no example")
    assert not problems, "\n".join(problems)
    assert bodies >= 50


def test_every_handler_body_type_has_an_example() -> None:
    examples = request_examples()
    missing = []
    for endpoint in ENDPOINTS:
        if not endpoint.has_body:
            continue
        field = endpoint.handler.parsed_fn_signature.parameters["data"]
        types = [a for a in getattr(field.annotation, "__args__", (field.annotation,)) if a is not type(None)]
        missing += [f"{endpoint.id}: {t.__qualname__}" for t in types if t not in examples]
    assert not missing, f"add examples to pulse/web/routes/examples.py for {missing}"


@pytest.mark.parametrize("body_type", list(request_examples()), ids=lambda t: t.__qualname__)
def test_each_example_is_a_valid_body(body_type: type) -> None:
    """The example decodes into the handler's body type exactly as a request body would (unknown fields refused)."""
    example = request_examples()[body_type]
    decoded = msgspec.json.decode(msgspec.json.encode(example), type=body_type)
    assert decoded is not None


def test_guarded_operations_declare_their_credentials(document: dict[str, Any]) -> None:
    security = {(m, p): op.get("security") or [] for m, p, op in operations(document)}
    for endpoint in ENDPOINTS:
        declared = security.get((endpoint.method, endpoint.path))
        if declared is None:
            continue
        names = {name for requirement in declared for name in requirement}
        if endpoint.kind in ("tenant", "operator"):
            assert names == {"BearerToken"}, f"{endpoint.id} declares {names}"
        elif endpoint.kind == "admin-key":
            assert names == {"AdminKey"}, f"{endpoint.id} declares {names}"
        else:
            assert not names, f"{endpoint.id} is public but declares {names}"
