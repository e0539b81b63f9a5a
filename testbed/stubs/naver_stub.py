"""A local Naver Shopping search API (`GET /v1/search/shop.json`) for tests.

Speaks the real wire format (`lastBuildDate`, `total`, `start`, `display`, `items[]` with `<b>`
marked titles, HTML entities, string prices, `mallName`, `category1..4`), checks the
`X-Naver-Client-Id` / `X-Naver-Client-Secret` headers, honours `display`, `start` and `sort`,
and answers Naver's error JSON (`{"errorMessage": ..., "errorCode": ...}`).

Failure modes are rules: `mode` for the next `times` requests (forever when None), optionally only
for one `query`. Query-scoped rules are checked before global ones. Set them from Python
(`stub.rate_limit(times=2)`) or, for Serve replicas in other processes, over HTTP:
`POST /__control` with `{"mode": "rate_limit", "times": 2, "query": null, "retry_after": 1}`,
`{"action": "reset"}`, `{"action": "clear"}` (rules only) or
`{"action": "set_products", "query": "...", "items": [...]}`; `GET /__stats` returns the counters.

Modes: ok, unauthorized (401), forbidden (403), rate_limit (429, optional Retry-After),
server_error (500), slow (wait `delay_s`, then answer normally), malformed (invalid JSON),
bad_shape (valid JSON without `items`).

Run standalone: `python -m testbed.stubs.naver_stub [--port N]` prints the base URL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEARCH_PATH = "/v1/search/shop.json"
MODES = ("ok", "unauthorized", "forbidden", "rate_limit", "server_error", "slow", "malformed", "bad_shape")
KST = timezone(timedelta(hours=9))

_ERRORS: dict[str, tuple[int, str, str]] = {
    "unauthorized": (401, "024", "Not Exist Client ID : Authentication failed. (인증에 실패했습니다.)"),
    "forbidden": (403, "024", "Scope Status Invalid : Authentication failed. (권한이 없습니다.)"),
    "rate_limit": (429, "012", "Rate limit exceeded. (속도 제한을 초과했습니다.)"),
    "server_error": (500, "SE99", "System Error (시스템 에러)"),
}
_MALLS = ["네이버", "", "데스크몰", "오피스마켓", "PC플러스", "리빙스토어"]


@dataclass
class Rule:
    """Answer `mode` to the next `times` matching requests (forever when None)."""

    mode: str
    times: int | None = None
    query: str | None = None
    delay_s: float = 2.0
    retry_after: str | None = None


@dataclass
class RecordedRequest:
    path: str
    params: dict[str, str]
    client_id: str | None
    client_secret: str | None
    status: int = 0


@dataclass
class _State:
    rules: list[Rule] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    products: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def make_item(query: str, index: int) -> dict[str, Any]:
    """One deterministic Naver-style item for `query`; every 7th has no price, every 6th no mall."""
    seed = int(hashlib.sha256(f"{query}#{index}".encode()).hexdigest()[:8], 16)
    words = query.split() or [query]
    price = "" if index % 7 == 3 else str(1000 + (seed % 500) * 100)
    product_id = str(80_000_000_000 + seed % 1_000_000_000)
    return {
        "title": f"{' '.join(f'<b>{w}</b>' for w in words)} 모델 {index} &amp; 사은품 &quot;한정&quot;",
        "link": f"https://smartstore.naver.com/main/products/{product_id}",
        "image": f"https://shopping-phinf.pstatic.net/main_{product_id}/{product_id}.jpg",
        "lprice": price,
        "hprice": "" if seed % 3 else str(int(price or 0) + 5000),
        "mallName": _MALLS[index % len(_MALLS)] if index % 6 != 1 else "",
        "productId": product_id,
        "productType": "2" if index % 4 else "1",
        "brand": "",
        "maker": "",
        "category1": "디지털/가전",
        "category2": "PC주변기기",
        "category3": words[-1],
        "category4": "".join(words),
    }


class NaverStub:
    """In-process Naver Shopping server on 127.0.0.1 (ephemeral port by default)."""

    def __init__(
        self,
        client_id: str = "stub-client-id",
        client_secret: str = "stub-client-secret",
        *,
        items_per_query: int = 30,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.items_per_query = items_per_query
        self._address = (host, port)
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> NaverStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        server = ThreadingHTTPServer(self._address, Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="naver-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes slow handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> NaverStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("stub not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- configuration -----------------------------------------------------------------------

    def set_mode(
        self,
        mode: str,
        *,
        times: int | None = None,
        query: str | None = None,
        delay_s: float = 2.0,
        retry_after: float | str | None = None,
    ) -> None:
        """Answer `mode` to the next `times` requests (all when None), for `query` only if given.

        `ok` clears the rules of that scope (global, or that query's).
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._lock:
            if mode == "ok":
                self._state.rules = [r for r in self._state.rules if r.query != query]
                return
            ra = None if retry_after is None else str(retry_after)
            self._state.rules.append(Rule(mode, times, query, float(delay_s), ra))

    def unauthorized(self, **kw: Any) -> None:
        self.set_mode("unauthorized", **kw)

    def rate_limit(self, times: int | None = None, **kw: Any) -> None:
        self.set_mode("rate_limit", times=times, **kw)

    def server_error(self, times: int | None = None, **kw: Any) -> None:
        self.set_mode("server_error", times=times, **kw)

    def slow(self, delay_s: float, times: int | None = None, **kw: Any) -> None:
        self.set_mode("slow", times=times, delay_s=delay_s, **kw)

    def malformed(self, times: int | None = None, **kw: Any) -> None:
        self.set_mode("malformed", times=times, **kw)

    def set_products(self, query: str, items: list[dict[str, Any]]) -> None:
        """Answer `query` with exactly these raw items (instead of generated ones)."""
        with self._lock:
            self._state.products[query] = [dict(item) for item in items]

    def clear_modes(self) -> None:
        with self._lock:
            self._state.rules.clear()

    def reset(self) -> None:
        """Forget rules, custom products and counters."""
        with self._lock:
            self._state = _State()

    def control(self, payload: dict[str, Any]) -> dict[str, Any]:
        """What `POST /__control` does with its JSON body; returns the stats."""
        action = payload.get("action")
        if action == "reset":
            self.reset()
        elif action == "clear":
            self.clear_modes()
        elif action == "set_products":
            self.set_products(str(payload["query"]), list(payload["items"]))
        elif action in (None, "mode"):
            if "mode" in payload:
                self.set_mode(
                    str(payload["mode"]),
                    times=payload.get("times"),
                    query=payload.get("query"),
                    delay_s=float(payload.get("delay_s", 2.0)),
                    retry_after=payload.get("retry_after"),
                )
        elif action != "stats":
            raise ValueError(f"unknown action {action!r}")
        return self.stats()

    # --- observation -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    @property
    def request_count(self) -> int:
        """Search requests received (control calls excluded)."""
        with self._lock:
            return len(self._state.requests)

    def count_for(self, query: str) -> int:
        with self._lock:
            return sum(1 for r in self._state.requests if r.params.get("query") == query)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_query: dict[str, int] = {}
            for r in self._state.requests:
                key = r.params.get("query", "")
                by_query[key] = by_query.get(key, 0) + 1
            return {
                "requests": len(self._state.requests),
                "by_query": by_query,
                "rules": [vars(rule).copy() for rule in self._state.rules],
            }

    # --- request handling (called from server threads) ----------------------------------------

    def _take_rule(self, query: str) -> Rule | None:
        with self._lock:
            scoped = [r for r in self._state.rules if r.query is not None and r.query == query]
            general = [r for r in self._state.rules if r.query is None]
            for rule in scoped + general:
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._state.rules.remove(rule)
                return rule
            return None

    def _catalog(self, query: str) -> list[dict[str, Any]]:
        with self._lock:
            custom = self._state.products.get(query)
        if custom is not None:
            return [dict(item) for item in custom]
        return [make_item(query, i) for i in range(1, self.items_per_query + 1)]

    def handle_search(self, params: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, extra headers, body) for one search request."""
        query = params.get("query", "")
        record = RecordedRequest(
            SEARCH_PATH, dict(params), headers.get("x-naver-client-id"), headers.get("x-naver-client-secret")
        )
        with self._lock:
            self._state.requests.append(record)
        status, extra, body = self._answer(query, params, headers)
        record.status = status
        return status, extra, body

    def _answer(self, query: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        rule = self._take_rule(query)
        if rule is not None:
            if rule.mode == "slow":
                if self._stopping.wait(rule.delay_s):
                    return _error(500, "SE99", "Server stopping")
            elif rule.mode == "malformed":
                return 200, {}, b'{"lastBuildDate": "Tue, 04 Jun 2024 16:30:00 +0900", "items": [{"title": '
            elif rule.mode == "bad_shape":
                return 200, {}, json.dumps({"result": "no items here"}).encode()
            else:
                status, code, message = _ERRORS[rule.mode]
                extra = {"Retry-After": rule.retry_after} if rule.mode == "rate_limit" and rule.retry_after else {}
                return _error(status, code, message, extra)
        if headers.get("x-naver-client-id") != self.client_id or (
            headers.get("x-naver-client-secret") != self.client_secret
        ):
            return _error(*_ERRORS["unauthorized"][:3])
        if not query.strip():
            return _error(400, "SE01", "Incorrect query request (잘못된 쿼리요청입니다.)")
        display = _int_param(params.get("display"), 10)
        start = _int_param(params.get("start"), 1)
        sort = params.get("sort", "sim")
        if display is None or not 1 <= display <= 100:
            return _error(400, "SE02", "Invalid display value (부적절한 display 값입니다.)")
        if start is None or not 1 <= start <= 1000:
            return _error(400, "SE03", "Invalid start value (부적절한 start 값입니다.)")
        if sort not in ("sim", "date", "asc", "dsc"):
            return _error(400, "SE04", "Invalid sort value (부적절한 sort 값입니다.)")
        items = self._catalog(query)
        if sort in ("asc", "dsc"):
            items.sort(key=lambda it: _int_param(str(it.get("lprice", "")), 0) or 0, reverse=sort == "dsc")
        elif sort == "date":
            items.reverse()
        page = items[start - 1 : start - 1 + display]
        body = {
            "lastBuildDate": format_datetime(datetime.now(KST).replace(microsecond=0)),
            "total": len(items),
            "start": start,
            "display": len(page),
            "items": page,
        }
        return 200, {}, json.dumps(body, ensure_ascii=False).encode()


def _int_param(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _error(
    status: int, code: str, message: str, extra: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"errorMessage": message, "errorCode": code}, ensure_ascii=False).encode()
    return status, extra or {}, body


class _Handler(BaseHTTPRequestHandler):
    owner: NaverStub
    protocol_version = "HTTP/1.1"
    server_version = "NaverStub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output quiet

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired while we were "slow")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        if url.path == "/__stats":
            self._send(200, json.dumps(self.owner.stats(), ensure_ascii=False).encode())
            return
        if url.path != SEARCH_PATH:
            self._send(404, json.dumps({"errorMessage": "Not Found", "errorCode": "SE05"}).encode())
            return
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, body = self.owner.handle_search(params, headers)
        self._send(status, body, extra)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlsplit(self.path).path != "/__control":
            self._send(404, b'{"errorMessage": "Not Found", "errorCode": "SE05"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            stats = self.owner.control(payload)
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode())
            return
        self._send(200, json.dumps(stats, ensure_ascii=False).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Naver Shopping search API stub.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default="stub-client-id")
    parser.add_argument("--client-secret", default="stub-client-secret")
    args = parser.parse_args()
    stub = NaverStub(args.client_id, args.client_secret, port=args.port).start()
    print(stub.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
