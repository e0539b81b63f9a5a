"""The images product, as the registry lists it."""

from serve_app.products.base import Product
from serve_app.products.images.flow import KIND, ImageFlow
from serve_app.products.images.route import request_schemas, router

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: ImageFlow(deps),
    schemas=request_schemas,
    endpoints=lambda args: (
        ["POST /v1/images/generations (OpenAI-compatible)", "POST /v1/images/edits (OpenAI-compatible)"]
        if args is None or args.openai.enabled
        else []
    ),
)
