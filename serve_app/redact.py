"""Outside services' words with anything secret-looking taken out, before they reach a task result,
an error answer or a log line: the configured key values, bearer and basic credentials, URL query
strings and user-info (signed URLs), `key=value` pairs whose name says secret, well-known key
shapes (`sk-`, `r8_`, `hf_`, `AIza`, JWTs), and long hex or mixed-case base64 runs."""

from __future__ import annotations

import re
from collections.abc import Iterable

MARK = "[redacted]"
MIN_SECRET_LEN = 6  # a configured value shorter than this is not searched for (it would match words)

_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#\"'<>]*)\?[^\s\"'<>]*")
_URL_USERINFO = re.compile(r"(?i)\b(https?://)[^\s/@\"'<>]+@")
_BEARER = r"(?i:bearer)(?=\s+[A-Za-z0-9._~+/=-]{6,})"
_BASIC = r"(?i:basic)(?=\s+[A-Za-z0-9+/]*(?:[0-9+/=]|[a-z][A-Z]|[A-Z][a-z]*[A-Z]))"  # base64, not a word
_AUTH_SCHEME = re.compile(rf"\b({_BEARER}|{_BASIC})(\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w-]*(?:api[_-]?key|apikey|secret|token|password|passwd|signature|credential|access[_-]?key"
    r"|authorization)[\w-]*)(\"?\s*[:=]\s*\"?)([^\s\"'&,;})]+)"
)
_KEY_SHAPES = re.compile(
    r"\b(?:(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|r8_[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{30,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _random_looking(match: re.Match[str]) -> str:
    """A long run that is hex, or has digits and both cases (a token, not a word or a model name)."""
    run = match.group(0)
    body = run.rstrip("=")
    mixed = any(c.isdigit() for c in body) and any(c.islower() for c in body) and any(c.isupper() for c in body)
    return MARK if _HEX.fullmatch(body) or mixed else run


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every configured `secrets` value and anything that looks like a credential
    replaced by `[redacted]`. Cut a message to length only after this, never before: a cut can
    leave a piece of a key that no longer matches."""
    for secret in sorted({s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(secret, MARK)
    text = _URL_QUERY.sub(rf"\1?{MARK}", text)
    text = _URL_USERINFO.sub(rf"\1{MARK}@", text)
    text = _AUTH_SCHEME.sub(rf"\1\2{MARK}", text)
    text = _SECRET_PAIR.sub(rf"\1\2{MARK}", text)
    text = _KEY_SHAPES.sub(MARK, text)
    return _LONG_RUN.sub(_random_looking, text)
