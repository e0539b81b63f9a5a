"""The code's shape, as docs/ARCHITECTURE.md states it: no import circle, modules of a readable size,
leaf packages that import no deployment or product, benchmarks that import nothing of tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serve_app", "deployments")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the app's packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The app modules `name` imports, in any scope (functions and TYPE_CHECKING blocks included:
    a type-only import is a dependency too), and the packages whose `__init__` those imports run."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                module = ".".join([*base, module] if module else base)
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        while target:  # importing a.b.c runs a and a.b first (their __init__)
            if target in known and target != name and not name.startswith(f"{target}."):
                resolved.add(target)
            target = target.rpartition(".")[0]
    return resolved


def registered_products() -> set[str]:
    """The registry imports each product's `product.py` by name (serve_app.products.registry)."""
    from serve_app.products.registry import REGISTERED

    return {f"serve_app.products.{name}.product" for name in REGISTERED}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    graph["serve_app.products.registry"] |= registered_products()
    assert len(graph) > 50, "the walk found the app's modules"
    assert cycles(graph) == []


def test_the_circle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_app_module_is_over_450_lines() -> None:
    long = {
        name: lines
        for name, path in modules().items()
        if name.startswith("serve_app") and (lines := len(path.read_text(encoding="utf-8").splitlines())) > 450
    }
    assert long == {}


def test_leaf_modules_import_no_deployment_or_product() -> None:
    known = modules()
    leaves = ("serve_app.errors", "serve_app.storage", "serve_app.backends", "serve_app.models")
    for name, path in known.items():
        if name.startswith(leaves):
            wrong = {t for t in imports_of(name, path, known) if t.startswith(("deployments", "serve_app.products"))}
            assert not wrong, f"{name} imports {wrong}"


def test_benchmarks_import_nothing_of_tests() -> None:
    for path in (ROOT / "benchmarks").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n == "tests" or n.startswith("tests.")], path


def test_the_product_registry_pickles_for_the_runners_replicas() -> None:
    """Serve ships the TaskRunner's class by value, the registry with it: every product's routers
    must pickle (a router that includes another does not)."""
    from ray import cloudpickle

    from serve_app.products.registry import PRODUCTS

    for product in PRODUCTS:
        cloudpickle.dumps(product)
