"""Patterns shared by request models (serve_app.requests, the products' payloads) and the OpenAPI document."""

from __future__ import annotations

# A prompt must have a character Python's str.strip() keeps (ECMA's \S differs: it keeps \x1c-\x1f
# and \x85, which strip() removes, and drops U+FEFF, which strip() keeps), stated for JSON Schema.
NON_BLANK_PATTERN = (
    "[^\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
