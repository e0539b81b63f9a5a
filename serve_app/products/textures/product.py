"""The textures product, as the registry lists it."""

from serve_app.products.base import ConfigSection, Product
from serve_app.products.textures.config import TexturesConfig
from serve_app.products.textures.flow import KIND, TextureFlow
from serve_app.products.textures.route import request_schemas, router

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: TextureFlow(deps, cache=deps.task_store),
    schemas=request_schemas,
    endpoints=lambda args: ["POST /v1/textures (fabric textures; a content-addressed cache; seamless tiling)"],
    config=ConfigSection("textures", TexturesConfig),
    chains=("texture",),
)
