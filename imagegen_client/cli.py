"""`imagegen`: submit, wait (with a progress bar fed by the task's event stream), download, cancel,
replay a webhook, verify a webhook's signature.

    imagegen submit "a walnut desk" --image desk.jpg --steps 8 --wait --out out/
    imagegen wait TASK --out out/
    imagegen verify-webhook --secret whsec_... --body-file body.json --header 'webhook-id: msg_...' ...

The server is --url (env IMAGEGEN_URL, default http://127.0.0.1:8000); the API key --api-key (env
IMAGEGEN_API_KEY; never printed). --json prints JSON on stdout instead of text. Progress goes to
stderr: a bar redrawn in place on a terminal, else one line per change of stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from imagegen_client.client import DEFAULT_URL, ImagegenClient
from imagegen_client.errors import (
    ApiError,
    ImagegenConnectionError,
    ImagegenError,
    TaskNotDone,
    WaitTimeout,
)
from imagegen_client.models import TaskEvent, TaskResult
from imagegen_client.webhooks import WebhookVerificationError, verify_webhook

EXIT_OK = 0
EXIT_FAILED = 1  # the task failed or is not done; a webhook did not verify
EXIT_USAGE = 2  # bad arguments or local input (argparse uses 2 too)
EXIT_API = 3  # the server refused the request (4xx/5xx after retries)
EXIT_UNREACHABLE = 4  # the server could not be reached
EXIT_TIMEOUT = 5  # --timeout passed while waiting
EXIT_INTERRUPTED = 130

EPILOG = """exit codes: 0 ok; 1 the task failed (or is not done), or the webhook did not verify;
2 bad arguments or input; 3 the server refused the request; 4 the server could not be reached;
5 timed out waiting; 130 interrupted."""

# How far along a task is at the start of each stage (generating fills the span up to searching).
STAGE_SHARE = {"queued": 0.0, "writing": 0.03, "captioning": 0.05, "generating": 0.1, "searching": 0.9, "storing": 0.95}


class ProgressDisplay:
    """Shows a task's events on `stream`: a bar redrawn in place on a terminal, else a line per
    change of status or stage (so logs stay readable)."""

    def __init__(self, task_id: str, stream: TextIO | None = None, tty: bool | None = None, width: int = 24) -> None:
        self.task_id = task_id
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self._last_state: tuple[str, str | None] | None = None
        self._fraction = 0.0

    def __call__(self, event: TaskEvent) -> None:
        if event.result is not None:
            self._finish(event.result)
        elif event.progress is not None:
            progress = event.progress
            if self.tty:
                self._draw(self.fraction(progress.stage, progress.step, progress.total_steps), self._label(event))
            elif (progress.status, progress.stage) != self._last_state:
                self._last_state = (progress.status, progress.stage)
                self._line(f"task {self.task_id}: {self._label(event)}")

    @staticmethod
    def fraction(stage: str | None, step: int | None, total: int | None) -> float:
        share = STAGE_SHARE.get(stage or "queued", 0.0)
        if stage == "generating" and step is not None and total:
            share += (STAGE_SHARE["searching"] - share) * min(1.0, step / total)
        return share

    @staticmethod
    def _label(event: TaskEvent) -> str:
        progress = event.progress
        assert progress is not None
        stage = progress.stage or progress.status
        parts = [stage if stage == progress.status else f"{progress.status}: {stage}"]
        if progress.status == "queued" and progress.queue_position is not None:
            parts.append(f"{progress.queue_position} ahead")
        if progress.step is not None and progress.total_steps:
            parts.append(f"step {progress.step}/{progress.total_steps}")
        if progress.eta_s is not None:
            parts.append(f"~{progress.eta_s:.0f}s left")
        return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")

    def _draw(self, fraction: float, label: str) -> None:
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r\x1b[2K{self.task_id[:12]} [{bar}] {fraction * 100:3.0f}% {label}")
        self.stream.flush()
        self._fraction = fraction

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _finish(self, result: TaskResult) -> None:
        outcome = result.status if result.status == "done" else f"{result.status} {result.error_code or ''}".strip()
        if self.tty:
            self._draw(1.0 if result.status == "done" else self._fraction, outcome)
            self.stream.write("\n")
            self.stream.flush()
        else:
            self._line(f"task {self.task_id}: {outcome}")


# -- output ----------------------------------------------------------------------------------------


def _emit_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _result_text(result: TaskResult) -> list[str]:
    lines = [f"task {result.task_id}: {result.status}"]
    if result.status == "failed":
        lines[0] += f" {result.error_code or ''}: {result.message or ''}".rstrip(": ")
    elif not result.finished:
        progress = result.progress
        if progress is not None:
            step = f" step {progress.step}/{progress.total_steps}" if progress.step is not None else ""
            lines.append(f"stage: {progress.stage}{step}")
        if result.queue_position is not None:
            lines.append(f"queue position: {result.queue_position}")
        if result.eta_s is not None:
            lines.append(f"eta: {result.eta_s:.1f} s")
    for url in result.image_urls:
        lines.append(f"image: {url}")
    if result.generation_skipped:
        lines.append(f"generation skipped: {result.generation_skipped}")
    if result.caption:
        lines.append(f"caption: {result.caption}")
    return lines


def _show_result(args: argparse.Namespace, result: TaskResult, files: list[Path] | None = None) -> None:
    if args.json:
        body = result.model_dump(mode="json", exclude_none=True)
        if files is not None:
            body["files"] = [str(path) for path in files]
        _emit_json(body)
        return
    for line in _result_text(result):
        print(line)
    for path in files or []:
        print(f"saved: {path}")


def _wait_and_show(args: argparse.Namespace, client: ImagegenClient, task_id: str) -> int:
    on_event: Callable[[TaskEvent], None] | None = None if args.quiet else ProgressDisplay(task_id)
    result = client.wait(task_id, on_event=on_event, timeout=args.timeout)
    files = client.download(result, args.out) if args.out and result.status == "done" else None
    _show_result(args, result, files)
    return EXIT_OK if result.status == "done" else EXIT_FAILED


# -- commands --------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace, client: ImagegenClient) -> int:
    extra: dict[str, Any] = {}
    for item in args.field or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--field takes NAME=VALUE, not {item!r}")
        try:
            extra[name] = json.loads(value)
        except ValueError:
            extra[name] = value
    image = args.image
    if image is not None and not Path(image).is_file():
        raise _UsageError(f"--image: no such file: {image}")
    try:
        accepted = client.submit(
            args.prompt,
            image=image,
            image_url=args.image_url,
            lora=args.lora,
            lora_scale=args.lora_scale,
            steps=args.steps,
            size=args.size,
            seed=args.seed,
            webhook_url=args.webhook_url,
            n=args.n,
            output_format=args.format,
            negative_prompt=args.negative_prompt,
            guidance_scale=args.guidance_scale,
            strength=args.strength,
            idempotency_key=args.idempotency_key,
            **extra,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    if not (args.wait or args.out):
        if args.json:
            _emit_json(accepted.model_dump(mode="json"))
        else:
            print(accepted.task_id)
        return EXIT_OK
    if not args.quiet:
        print(f"submitted task {accepted.task_id}", file=sys.stderr)
    return _wait_and_show(args, client, accepted.task_id)


def cmd_wait(args: argparse.Namespace, client: ImagegenClient) -> int:
    return _wait_and_show(args, client, args.task)


def cmd_result(args: argparse.Namespace, client: ImagegenClient) -> int:
    _show_result(args, client.result(args.task))
    return EXIT_OK


def cmd_download(args: argparse.Namespace, client: ImagegenClient) -> int:
    files = client.download(args.task, args.out)
    if args.json:
        _emit_json({"task_id": args.task, "files": [str(path) for path in files]})
    else:
        for path in files:
            print(path)
        if not files:
            print(f"task {args.task} made no image", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: ImagegenClient) -> int:
    result = client.cancel(args.task)
    if args.json:
        _emit_json(result.model_dump(mode="json", exclude_none=True))
    elif result.finished:
        print(f"task {result.task_id}: {result.status} {result.error_code or ''}".rstrip())
    else:
        print(f"task {result.task_id}: cancellation requested; it stops at its next step")
    return EXIT_OK


def cmd_replay_webhook(args: argparse.Namespace, client: ImagegenClient) -> int:
    replay = client.replay_webhook(args.task)
    if args.json:
        _emit_json(replay.model_dump(mode="json"))
    else:
        print(f"task {replay.task_id}: webhook {replay.webhook_id} queued for delivery")
    return EXIT_OK


def cmd_verify_webhook(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("IMAGEGEN_WEBHOOK_SECRET")
    if not secret:
        raise _UsageError("give --secret or set IMAGEGEN_WEBHOOK_SECRET")
    headers: dict[str, str] = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise _UsageError(f"--header takes 'NAME: VALUE', not {item!r}")
        headers[name.strip().lower()] = value.strip()
    try:
        body = sys.stdin.buffer.read() if args.body_file == "-" else Path(args.body_file).read_bytes()
    except OSError as exc:
        raise _UsageError(f"--body-file: {exc.strerror or exc}: {args.body_file}") from exc
    try:
        verify_webhook(secret, headers, body, tolerance_s=args.tolerance)
    except ValueError as exc:  # the secret itself is malformed
        raise _UsageError(f"--secret: {exc}") from exc
    except WebhookVerificationError as exc:
        if args.json:
            _emit_json({"valid": False, "reason": str(exc)})
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _emit_json({"valid": True, "webhook_id": headers.get("webhook-id")})
    else:
        print(f"valid: {headers.get('webhook-id')}")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--url, --api-key, --json, ... on the main parser (with defaults) and again on every command
    (without), so they may come before or after the command."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url", default=default(os.environ.get("IMAGEGEN_URL", DEFAULT_URL)), help="server (env IMAGEGEN_URL)"
    )
    parser.add_argument(
        "--api-key",
        default=default(os.environ.get("IMAGEGEN_API_KEY")),
        help="API key, igs_... (env IMAGEGEN_API_KEY); never printed",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="print JSON on stdout")
    parser.add_argument(
        "--request-timeout", type=float, default=default(30.0), help="seconds per HTTP request (default 30)"
    )
    parser.add_argument("--retries", type=int, default=default(3), help="retries of a failed request (default 3)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False), help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="Client of an imagegen-serve server: submit, wait, download, cancel, webhooks.",
        epilog=EPILOG,
    )
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EPILOG)

    def wait_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--out", metavar="DIR", help="download the images into DIR once done")
        sub.add_argument("--timeout", type=float, help="give up waiting after this many seconds (exit 5)")

    submit = command("submit", "Submit a desk makeover (with --image/--image-url) or a text-to-image task.")
    submit.add_argument(
        "prompt", metavar="PROMPT", nargs="?", help="what to make; with a photo it may be left out (from its caption)"
    )
    source = submit.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH", help="the photo to restyle (uploaded)")
    source.add_argument("--image-url", metavar="URL", help="the photo's http(s) or s3:// URL")
    submit.add_argument("--lora", metavar="NAME", help="LoRA adapter (see GET /info)")
    submit.add_argument("--lora-scale", type=float, metavar="SCALE")
    submit.add_argument("--steps", type=_positive_int, metavar="N", help="diffusion steps")
    submit.add_argument("--seed", type=int, metavar="N")
    submit.add_argument("--size", metavar="WxH", help="e.g. 512x512")
    submit.add_argument("--n", type=_positive_int, metavar="N", help="number of images")
    submit.add_argument("--format", choices=["png", "jpeg", "webp"], help="output image format")
    submit.add_argument("--negative-prompt", metavar="TEXT")
    submit.add_argument("--guidance-scale", type=float, metavar="G")
    submit.add_argument("--strength", type=float, metavar="S", help="img2img strength (0, 1]")
    submit.add_argument("--webhook-url", metavar="URL", help="POST the signed result there when done")
    submit.add_argument("--idempotency-key", metavar="KEY", help="default: a new one per run (kept on retries)")
    submit.add_argument("--field", action="append", metavar="NAME=VALUE", help="any other request field (JSON value)")
    submit.add_argument("--wait", action="store_true", help="wait for the result, showing progress")
    wait_options(submit)
    submit.set_defaults(handler=cmd_submit)

    wait = command("wait", "Wait for a task to end, showing its progress; exit 1 if it failed.")
    wait.add_argument("task", metavar="TASK")
    wait_options(wait)
    wait.set_defaults(handler=cmd_wait)

    result = command("result", "Show a task's status or result.")
    result.add_argument("task", metavar="TASK")
    result.set_defaults(handler=cmd_result)

    download = command("download", "Download a done task's images.")
    download.add_argument("task", metavar="TASK")
    download.add_argument("--out", metavar="DIR", required=True)
    download.set_defaults(handler=cmd_download)

    cancel = command("cancel", "Cancel a task.")
    cancel.add_argument("task", metavar="TASK")
    cancel.set_defaults(handler=cmd_cancel)

    replay = command("replay-webhook", "Deliver a finished task's webhook again (same webhook-id).")
    replay.add_argument("task", metavar="TASK")
    replay.set_defaults(handler=cmd_replay_webhook)

    verify = command("verify-webhook", "Verify a received webhook's signature: exit 0 valid, 1 invalid.")
    verify.add_argument("--secret", help="whsec_... (default: env IMAGEGEN_WEBHOOK_SECRET)")
    verify.add_argument("--body-file", required=True, metavar="FILE", help="the raw body as received ('-': stdin)")
    verify.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="a received header (webhook-id, webhook-timestamp, webhook-signature); repeat",
    )
    verify.add_argument("--tolerance", type=float, default=300.0, help="seconds of clock skew allowed (default 300)")
    verify.set_defaults(handler=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verify-webhook":
            return cmd_verify_webhook(args)
        if args.command == "submit" and args.size:
            from imagegen_client.client import parse_size

            try:
                parse_size(args.size)
            except ValueError as exc:
                raise _UsageError(f"--size: {exc}") from exc
        with ImagegenClient(
            args.url, api_key=args.api_key, timeout=args.request_timeout, max_retries=max(0, args.retries)
        ) as client:
            return int(args.handler(args, client))
    except _UsageError as exc:
        return _fail(args, EXIT_USAGE, "usage", str(exc))
    except ApiError as exc:
        after = f" (retry after {exc.retry_after:.0f} s)" if exc.retry_after is not None else ""
        return _fail(args, EXIT_API, exc.error_code, f"{exc.status} {exc.error_code}: {exc.message}{after}", exc)
    except ImagegenConnectionError as exc:
        return _fail(args, EXIT_UNREACHABLE, "UNREACHABLE", f"cannot reach the server: {exc}")
    except WaitTimeout as exc:
        return _fail(args, EXIT_TIMEOUT, "TIMEOUT", str(exc))
    except TaskNotDone as exc:
        return _fail(args, EXIT_FAILED, exc.error_code or "NOT_DONE", str(exc))
    except ImagegenError as exc:
        return _fail(args, EXIT_API, "ERROR", str(exc))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(args: argparse.Namespace, code: int, error_code: str, message: str, exc: ApiError | None = None) -> int:
    print(f"imagegen: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        error: dict[str, Any] = {"error_code": error_code, "message": exc.message if exc else message}
        if exc is not None:
            error.update(status=exc.status, retry_after=exc.retry_after)
        _emit_json({"error": error})
    return code


if __name__ == "__main__":
    sys.exit(main())
