"""The fuzz run's mend of schemathesis (tests/integration/schemathesis_hooks.py): negative bodies
for a multipart form with a `format: binary` upload are drawn without the tool's own
`ValueError: Unsupported type: 'Binary'` (CI stop 27 failed on it), while the same draws still
come out schema-invalid."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.jsonschema import strategy as jsonschema_strategy
from schemathesis.specs.openapi._caches import clear_all
from schemathesis.specs.openapi.negative import _strip_binary

from serve_app.ingress import app
from tests.integration import schemathesis_hooks

SEEDS = range(6)  # with the tool as it is, seeds 2 and 3 raise within 100 examples (schemathesis 4.32.5)


@pytest.fixture(scope="module")
def generate_form() -> Any:
    return schemathesis.openapi.from_dict(app.openapi())["/v1/generate"]["POST"]


@pytest.fixture
def tool_validator() -> Iterator[None]:
    """The tool without the mend; its strategy caches are emptied both ways, since strategies built
    with one judge would otherwise be reused with the other."""
    jsonschema_strategy._validator = schemathesis_hooks._tool_validator
    clear_all()
    yield
    jsonschema_strategy._validator = schemathesis_hooks._validator_reading_uploads_as_text
    clear_all()


def _draw_negative(operation: Any, check: Callable[[Any], None]) -> list[str]:
    errors = []
    strategy = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    for number in SEEDS:

        @seed(number)
        @settings(
            max_examples=100,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def draw(case: Any) -> None:
            check(case)

        try:
            draw()
        except ValueError as error:
            errors.append(str(error))
    return errors


def test_the_tool_alone_fails_on_the_upload_form(generate_form: Any, tool_validator: None) -> None:
    """If this stops failing, schemathesis reads `Binary` itself and the mend can go."""
    errors = _draw_negative(generate_form, lambda case: None)
    assert errors and all("Unsupported type: 'Binary'" in error for error in errors)


def test_with_the_mend_every_negative_upload_form_is_drawn_and_invalid(generate_form: Any) -> None:
    assert jsonschema_strategy._validator is schemathesis_hooks._validator_reading_uploads_as_text
    document = app.openapi()
    form = jsonschema_rs.Draft202012Validator(
        {**document["components"]["schemas"]["GenerateForm"], "components": document["components"]}
    )
    seen = {"uploads": 0}

    def check(case: Any) -> None:
        body = case.meta.components.get(ParameterLocation.BODY)
        if body is None or body.mode is not GenerationMode.NEGATIVE or not isinstance(case.body, dict):
            return  # another part broken (a header), or the body is not an object at all
        if "image" in case.body:
            seen["uploads"] += 1
        assert not form.is_valid(_strip_binary(case.body)), case.body

    assert _draw_negative(generate_form, check) == []
    assert seen["uploads"] > 0, "the draws included an uploaded image"
