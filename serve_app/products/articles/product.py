"""The articles product, as the registry lists it."""

from serve_app.products.articles.config import ArticlesConfig
from serve_app.products.articles.flow import KIND, ArticleFlow
from serve_app.products.articles.route import request_schemas, router
from serve_app.products.base import ConfigSection, Product

PRODUCT = Product(
    kind=KIND,
    router=router,
    build_flow=lambda deps, args: ArticleFlow(deps),
    schemas=request_schemas,
    endpoints=lambda args: ["POST /v1/articles/images (one image per article placeholder)"],
    config=ConfigSection("articles", ArticlesConfig),
    chains=("article",),
)
