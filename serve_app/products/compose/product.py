"""The compose product, as the registry lists it."""

from serve_app.products.base import ConfigSection, Product
from serve_app.products.compose.config import ComposeConfig
from serve_app.products.compose.flow import KIND, ComposeFlow
from serve_app.products.compose.route import request_schemas, router

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: ComposeFlow(deps, args.product_config(ComposeConfig)),
    schemas=request_schemas,
    endpoints=lambda args: [
        "POST /api/compose-dress (a person photo and a garment photo composed into one: Gemini, then OpenAI)"
    ],
    config=ConfigSection("compose", ComposeConfig, in_info=False),
    chains=(KIND,),
    compose_chains=(KIND,),
    default_chains={KIND: ("gemini", "openai:gpt-image-1")},
)
