"""Create, list and revoke API keys in the task store a serve config points at.

    python -m serve_app.keys create NAME [--user-id U] [--rpm N] [--max-in-flight N]
                                         [--max-pixel-steps N] [--max-cost-in-flight N]
    python -m serve_app.keys list [--all] [--json]
    python -m serve_app.keys revoke KEY_ID

Options before the command: `--config serve_config.yaml` (default) and `--app NAME` (default: the
first application). Run it where `serve run` / `serve deploy` runs, so a relative `data_dir` names
the same SQLite file; with `tasks.store: postgres` it reads IMAGEGEN_TASKS_DSN like the replicas.

`create` prints the key alone on stdout (`KEY=$(python -m serve_app.keys create ci)`): it is shown
this once and stored only as a hash. Everything else goes to stderr. Revoking takes effect on the
next request on every replica.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from serve_app.config import AppArgs
from serve_app.errors import AppError
from serve_app.settings import get_settings
from serve_app.tasks import TaskStore, open_task_store
from serve_app.tasks.api_keys import KeyLimits


def _app_args(config_path: str, app_name: str | None) -> AppArgs:
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    apps = config.get("applications") or []
    if not apps:
        raise SystemExit(f"{config_path}: no applications")
    chosen = next((a for a in apps if a.get("name") == app_name), None) if app_name else apps[0]
    if chosen is None:
        raise SystemExit(f"{config_path}: no application named {app_name!r}")
    return AppArgs.model_validate(chosen.get("args") or {}).resolved()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve_app.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="serve_config.yaml", help="serve config whose task store holds the keys")
    parser.add_argument("--app", default=None, help="application name in the config (default: the first)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("name", help="what the key is for, e.g. 'spring-backend'")
    create.add_argument("--user-id", default=None, help="owner segment of its images' storage keys (default: key-<id>)")
    create.add_argument("--rpm", type=int, default=None, help="generation requests per rolling minute")
    create.add_argument("--max-in-flight", type=int, default=None, help="tasks queued or running at once")
    create.add_argument("--max-pixel-steps", type=int, default=None, help="height x width x steps of one image")
    create.add_argument("--max-cost-in-flight", type=int, default=None, help="pixel-steps of its tasks in flight")
    listing = commands.add_parser("list", help="keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


def _run(store: TaskStore, args: argparse.Namespace) -> int:
    if args.command == "create":
        limits = KeyLimits(
            requests_per_minute=args.rpm,
            max_in_flight=args.max_in_flight,
            max_pixel_steps_per_image=args.max_pixel_steps,
            max_cost_in_flight=args.max_cost_in_flight,
        )
        key, token = store.keys.create(args.name, user_id=args.user_id, limits=limits)
        print(f"created key {key.key_id} ({key.name}) for user {key.user_id}; it is shown only now:", file=sys.stderr)
        print(token)
        return 0
    if args.command == "list":
        for key in store.keys.list(include_revoked=args.all):
            row: dict[str, Any] = key.model_dump(mode="json")
            if args.json:
                print(json.dumps(row))
            else:
                state = "revoked" if key.revoked else "active"
                limits = ", ".join(f"{k}={v}" for k, v in row["limits"].items() if v is not None) or "defaults"
                print(f"{key.key_id}  {state:7}  {key.name}  user={key.user_id}  limits: {limits}")
        return 0
    key = store.keys.revoke(args.key_id)
    print(f"revoked key {key.key_id} ({key.name})", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        app_args = _app_args(args.config, args.app)
        store = open_task_store(app_args.tasks, get_settings())
    except (OSError, ValueError, AppError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(store, args)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
