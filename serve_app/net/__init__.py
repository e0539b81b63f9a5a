"""Safe fetching of user-supplied URLs (initial images, webhooks): an SSRF guard (`guard`), requests
pinned to the checked addresses (`fetch`), and the policy that bounds them (`policy`)."""

from serve_app.net.fetch import fetch_bytes, post_json
from serve_app.net.guard import (
    Resolver,
    Target,
    UnresolvableHost,
    acheck_url,
    check_url,
    forbidden_reason,
    parse_loose_ipv4,
)
from serve_app.net.policy import FetchPolicy

__all__ = [
    "FetchPolicy",
    "Resolver",
    "Target",
    "UnresolvableHost",
    "acheck_url",
    "check_url",
    "fetch_bytes",
    "forbidden_reason",
    "parse_loose_ipv4",
    "post_json",
]
