"""The products the app serves, one folder each; `registry.py` lists them."""
