"""The desk product, as the registry lists it."""

from serve_app.items import load_item_vocabulary
from serve_app.products.base import Product
from serve_app.products.desk.flow import DeskFlow
from serve_app.products.desk.route import KIND, request_schemas, router

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: DeskFlow(deps, load_item_vocabulary()),
    schemas=request_schemas,
    endpoints=lambda args: ["POST /v1/generate"],
)
