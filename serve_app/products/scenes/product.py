"""The scenes product, as the registry lists it."""

from serve_app.products.base import ConfigSection, Product
from serve_app.products.scenes.config import ScenesConfig
from serve_app.products.scenes.flow import KIND, SceneFlow
from serve_app.products.scenes.route import request_schemas, router

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: SceneFlow(deps),
    schemas=request_schemas,
    endpoints=lambda args: [
        "POST /api/v1/images/generations/external (scene image, cloud chain)",
        "POST /api/v1/images/generations/internal (scene image, in-cluster Generator)",
    ],
    config=ConfigSection("scenes", ScenesConfig),
    chains=("scene_internal", "scene_external"),
)
