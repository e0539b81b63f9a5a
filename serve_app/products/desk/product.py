"""The desk product, as the registry lists it: POST /v1/generate, and the seed's own paths beside it."""

from typing import Any

from serve_app.items import load_item_vocabulary
from serve_app.products.base import Product, SchemaContext
from serve_app.products.desk import route, seed
from serve_app.products.desk.flow import DeskFlow


def _schemas(doc: SchemaContext) -> dict[str, dict[str, Any]]:
    v1 = route.request_schemas(doc)
    return {**v1, **seed.seed_schemas(v1)}


PRODUCT = Product(
    kind=route.KIND,
    router=route.router,
    more_routers=(seed.router,),
    build_flow=lambda deps, args: DeskFlow(deps, load_item_vocabulary()),
    schemas=_schemas,
    endpoints=lambda args: [
        "POST /v1/generate",
        "POST /generate (the seed's path: lenient body, 200 {task_id, status})",
        "GET /result/{task_id} (the seed's path: items' offers at the top level)",
    ],
)
