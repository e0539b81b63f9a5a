"""The edits product, as the registry lists it."""

from serve_app.backends.restoration import build_restorer
from serve_app.products.base import ConfigSection, Product
from serve_app.products.edits.config import EditsConfig
from serve_app.products.edits.flow import KIND, EditFlow
from serve_app.products.edits.route import request_schemas, router
from serve_app.writing.analysis import build_analyst

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: EditFlow(
        deps,
        restorer=build_restorer(args.product_config(EditsConfig).face_restoration, args.backends, args.fetch),
        analyst=build_analyst(args.product_config(EditsConfig).analysis, args.backends, args.fetch),
    ),
    schemas=request_schemas,
    endpoints=lambda args: [
        "POST /v1/edits (instruction edit of an uploaded image: InstructPix2Pix or a cloud edit API)"
    ],
    config=ConfigSection("edits", EditsConfig, in_info=False),
    chains=("edit",),
    edit_chains=("edit",),
)
