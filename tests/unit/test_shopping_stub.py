"""The Naver stub itself speaks the real wire format (so the client tests mean something)."""

from __future__ import annotations

import httpx
import pytest

from testbed.stubs.naver_stub import NaverStub

AUTH = {"X-Naver-Client-Id": "stub-client-id", "X-Naver-Client-Secret": "stub-client-secret"}


def get(stub: NaverStub, headers: dict[str, str] | None = None, **params: object) -> httpx.Response:
    params.setdefault("query", "무선 마우스")
    return httpx.get(
        f"{stub.base_url}/v1/search/shop.json", params=params, headers=AUTH if headers is None else headers
    )


def test_wire_format_and_paging(stub: NaverStub) -> None:
    body = get(stub, display=5, start=3).json()
    assert set(body) == {"lastBuildDate", "total", "start", "display", "items"}
    assert body["total"] == 30 and body["start"] == 3 and body["display"] == 5 and len(body["items"]) == 5
    first_page = get(stub, display=10).json()["items"]
    assert [i["productId"] for i in body["items"]] == [i["productId"] for i in first_page[2:7]]
    item = body["items"][0]
    assert set(item) >= {
        "title", "link", "image", "lprice", "hprice", "mallName", "productId", "productType",
        "brand", "maker", "category1", "category2", "category3", "category4",
    }  # fmt: skip
    assert "<b>" in item["title"] and "&amp;" in item["title"]
    assert all(isinstance(i["lprice"], str) for i in first_page)
    assert get(stub).json()["display"] == 10  # Naver's default


def test_sort_asc_orders_by_price(stub: NaverStub) -> None:
    items = get(stub, display=100, sort="asc").json()["items"]
    prices = [int(i["lprice"] or 0) for i in items]
    assert prices == sorted(prices)
    assert any(i["lprice"] == "" for i in items) and any(i["mallName"] == "" for i in items)


@pytest.mark.parametrize(
    ("params", "code"),
    [({"display": 0}, "SE02"), ({"display": 101}, "SE02"), ({"start": 1001}, "SE03"), ({"sort": "x"}, "SE04")],
)
def test_bad_parameters_get_naver_errors(stub: NaverStub, params: dict[str, object], code: str) -> None:
    answer = get(stub, **params)
    assert answer.status_code == 400 and answer.json()["errorCode"] == code


def test_wrong_keys_get_401_with_naver_error_json(stub: NaverStub) -> None:
    answer = get(stub, headers={"X-Naver-Client-Id": "stub-client-id", "X-Naver-Client-Secret": "nope"})
    assert answer.status_code == 401
    assert answer.json()["errorCode"] == "024" and "errorMessage" in answer.json()
    assert get(stub, headers={}).status_code == 401


def test_rules_count_down_and_are_scoped(stub: NaverStub) -> None:
    stub.rate_limit(times=2, retry_after=7)
    stub.server_error(times=1, query="키보드")
    first = get(stub)
    assert first.status_code == 429 and first.headers["Retry-After"] == "7" and first.json()["errorCode"] == "012"
    assert get(stub, query="키보드").status_code == 500  # scoped rule wins for its query
    assert get(stub, query="키보드").status_code == 429
    assert get(stub).status_code == 200
    assert stub.request_count == 4 and stub.count_for("키보드") == 2
    assert [r.status for r in stub.requests] == [429, 500, 429, 200]


def test_control_endpoint(stub: NaverStub) -> None:
    control = f"{stub.base_url}/__control"
    assert httpx.post(control, json={"mode": "malformed", "times": 1}).status_code == 200
    assert get(stub).text.startswith("{") and get(stub).status_code == 200
    httpx.post(control, json={"action": "set_products", "query": "펜", "items": [{"title": "볼펜", "lprice": "500"}]})
    assert get(stub, query="펜").json()["items"] == [{"title": "볼펜", "lprice": "500"}]
    httpx.post(control, json={"mode": "unauthorized"})
    assert get(stub).status_code == 401
    httpx.post(control, json={"mode": "ok"})
    assert get(stub).status_code == 200
    assert httpx.post(control, json={"mode": "bogus"}).status_code == 400
    assert httpx.post(control, json={"action": "reset"}).json() == {"requests": 0, "by_query": {}, "rules": []}


def test_stop_does_not_wait_for_slow_requests() -> None:
    stub = NaverStub().start()
    stub.slow(delay_s=30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{stub.base_url}/v1/search/shop.json", params={"query": "x"}, headers=AUTH, timeout=0.1)
    stub.stop()  # returns promptly: slow handlers wake on stop
    with pytest.raises(RuntimeError):
        _ = stub.base_url
