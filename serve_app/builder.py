"""build_app: the one place that wires the deployment graph (serve_config.yaml's import_path)."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.captioner import Captioner
from deployments.desk_classifier import DeskClassifier
from deployments.editor import Editor
from deployments.generator import Generator
from deployments.shopping_search import ShoppingSearch
from deployments.task_runner import TaskRunner
from deployments.translator import Translator
from serve_app.config import AppArgs
from serve_app.ingress import Ingress
from serve_app.presets import load_preset


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    """Ingress -> TaskRunner -> {Captioner, DeskClassifier, Generator, Editor, ShoppingSearch, Translator}.

    Replica counts, resources, autoscaling and batching knobs are not set here: they come from
    serve_config.yaml (`deployments:` by class name).
    Arguments are validated here, once, and reach every replica as typed config objects.
    """
    parsed = (args if isinstance(args, AppArgs) else AppArgs.model_validate(args)).resolved()
    preset = load_preset(parsed.preset)  # fail fast on a bad preset, before any replica starts
    cache_dir = parsed.model_cache_dir or ""

    captioner = Captioner.bind(preset, cache_dir)
    classifier = DeskClassifier.bind(preset, cache_dir)
    generator = Generator.bind(preset, cache_dir)
    shopping = ShoppingSearch.bind(parsed.shopping, f"{parsed.public_base_url}/static")
    editor = Editor.bind(preset, cache_dir)
    translator = Translator.bind(preset, cache_dir)
    stages = {
        "captioner": captioner,
        "classifier": classifier,
        "generator": generator,
        "shopping": shopping,
        "editor": editor,
        "translator": translator,
    }
    runner = TaskRunner.bind(parsed, stages)
    # /healthcheck reports each model deployment by the names it has always used
    probes = {"desk_classifier" if name == "classifier" else name: handle for name, handle in stages.items()}
    return Ingress.bind(parsed, preset, runner, probes)
