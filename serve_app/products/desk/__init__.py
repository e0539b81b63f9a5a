"""The desk makeover (the flagship, source spec desk-generate-api-spec.md): a desk photo is captioned
and classified, restyled by Stable Diffusion + LoRA, and the items it shows come back with shopping
offers."""
