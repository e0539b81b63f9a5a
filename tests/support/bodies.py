"""Request bodies the tests send, built from the examples the app's routes publish (so a test's body
stays what the OpenAPI page shows)."""

from __future__ import annotations

import copy
from typing import Any

from serve_app.products.scenes.route import EXAMPLE as SCENE_EXAMPLE


def scene_body(script_id: int, **fields: Any) -> dict[str, Any]:
    """The scene route's example (two characters, a narration and a line of 민지's) as script
    `script_id`, with `fields` over it; a deep copy, so a test may change its lists."""
    body = copy.deepcopy(SCENE_EXAMPLE)
    body["script_metadata"]["script_id"] = script_id
    return body | fields
