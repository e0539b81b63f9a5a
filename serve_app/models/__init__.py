"""Model engines (plain classes, no Ray) and the tiny offline models the `tiny` preset builds.

Submodules import torch/diffusers/transformers; this package itself imports nothing heavy.
"""
