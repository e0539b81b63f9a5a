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

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def _describe(errors: list[Any]) -> str:
    """'guidance_scale: Input should be a valid number' for the first error (the one to fix first)."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(loc)
    msg = str(first.get("msg", "Invalid input."))
    if first.get("type") == "extra_forbidden":
        msg = "Unknown field."
    return f"{field}: {msg}" if field else msg


def validation_error(errors: list[Any]) -> InvalidInput:
    return InvalidInput(_describe(errors))


def install_error_handlers(app: FastAPI, on_error: Callable[[int, str], None] | None = None) -> None:
    def respond(exc: AppError) -> JSONResponse:
        if on_error is not None:
            on_error(exc.status_code, exc.error_code)
        return JSONResponse(status_code=exc.status_code, content=exc.body(), headers=exc.headers or None)

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.error("request failed: %s %s", exc.error_code, exc.message)
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(validation_error(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _model_validation(_: Request, exc: ValidationError) -> JSONResponse:
        return respond(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        err = AppError(str(exc.detail), error_code=code, headers=dict(exc.headers or {}))  # 405 keeps Allow
        err.status_code = exc.status_code  # type: ignore[misc]
        return respond(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in the ingress")
        return respond(AppError("Internal server error."))
