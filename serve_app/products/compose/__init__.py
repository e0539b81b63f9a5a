"""Virtual try-on: a person photo and a garment photo composed into one (enhancement-api-options.md)."""
