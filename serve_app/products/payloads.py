"""Every product's payload, as the task a route records carries it (`ResolvedGenerate.product`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from serve_app.products.articles.payload import ArticlePayload
from serve_app.products.edits.payload import EditPayload
from serve_app.products.scenes.payload import ScenePayload
from serve_app.products.textures.payload import TexturePayload

ProductPayload = Annotated[ScenePayload | ArticlePayload | TexturePayload | EditPayload, Field(discriminator="kind")]
