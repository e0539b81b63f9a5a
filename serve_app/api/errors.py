"""The one error mapper: AppError, validation errors and anything unexpected -> SPEC.md section 4 shapes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.errors import AppError, InvalidInput

logger = logging.getLogger("ray.serve")

_LOC_ROOTS = ("body", "query", "path", "header")
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def _describe(errors: list[Any]) -> str:
    """'guidance_scale: Input should be a valid number' for the first error (the one to fix first)."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in _LOC_ROOTS]
    field = ".".join(loc)
    msg = str(first.get("msg", "Invalid input."))
    if first.get("type") == "extra_forbidden":
        msg = "Unknown field."
    return f"{field}: {msg}" if field else msg


def validation_error(errors: list[Any]) -> InvalidInput:
    error = InvalidInput(_describe(errors))
    error.param = _param(errors)
    return error


def _param(errors: list[Any]) -> str | None:
    loc = [str(part) for part in (errors[0] if errors else {}).get("loc", ()) if part not in _LOC_ROOTS]
    return ".".join(loc) or None


BODY_PARSE_ERROR = "There was an error parsing the body"
_NOT_JSON = {"type": "json_invalid", "loc": ("body",), "msg": "The body is not valid UTF-8 JSON.", "input": None}

OPENAI_PATHS = ("/v1/images/generations", "/v1/images/edits")


def openai_error(exc: AppError) -> tuple[int, dict[str, Any]]:
    """The OpenAI API's error shape for the OpenAI-compatible routes, so its clients raise their
    usual exceptions: `{"error": {"message", "type", "param", "code"}}`, with this server's
    error_code as `code`. Invalid input is 400 there (422 on the rest of /v1)."""
    status = 400 if exc.status_code == 422 else exc.status_code
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    error = {"message": exc.message, "type": kind, "param": getattr(exc, "param", None), "code": exc.error_code}
    return status, {"error": error}


def error_response(path: str, exc: AppError) -> JSONResponse:
    """`exc` as the route at `path` answers errors (OpenAI's shape on the OpenAI-compatible routes)."""
    status, body = exc.status_code, exc.body()
    if path.endswith(OPENAI_PATHS):
        status, body = openai_error(exc)
    return JSONResponse(status_code=status, content=body, headers=exc.headers or None)


def install_error_handlers(app: FastAPI, on_error: Callable[[int, str], None] | None = None) -> None:
    def respond(request: Request, exc: AppError) -> JSONResponse:
        if on_error is not None:
            on_error(exc.status_code, exc.error_code)
        return error_response(request.url.path, exc)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.error("request failed: %s %s", exc.error_code, exc.message)
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(request, validation_error(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        return respond(request, validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # FastAPI's 400 for a body that is not even text (invalid UTF-8): the same 422 as any
            # other malformed JSON body, so every JSON route documents one answer for bad bodies.
            return respond(request, validation_error([_NOT_JSON]))
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        err = AppError(str(exc.detail), error_code=code, headers=dict(exc.headers or {}))  # 405 keeps Allow
        err.status_code = exc.status_code  # type: ignore[misc]
        return respond(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in the ingress")
        return respond(request, AppError("Internal server error."))
