"""Scene images from a script's scene (source spec scene-image-service-readme.md), on its own paths."""
