"""Fabric textures with a content-addressed cache (source spec texture-generator-upgrade.md)."""
