"""Every cloud image provider, one module each (its client, registered with `@register_backend`).
Importing this package imports them all, so `serve_app.backends.registry.REGISTERED` is complete."""

from importlib import import_module
from pkgutil import iter_modules

for _module in iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
