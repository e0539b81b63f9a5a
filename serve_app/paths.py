"""Where the app finds its files: the repository root, `configs/` beside the package, and the
package's own data (catalog, web page)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

CONFIGS_DIR = REPO_ROOT / "configs"
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"


def load_yaml_config(name: str) -> dict:
    """A YAML file from configs/ (vocabularies, templates)."""
    path = CONFIGS_DIR / name
    return yaml.safe_load(path.read_text(encoding="utf-8"))
