"""Instruction edits of an uploaded image (source spec enhancement-api-options.md)."""
