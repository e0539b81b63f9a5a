"""A local OpenAI-compatible chat completions API (`POST /v1/chat/completions`) for the prompt writer.

Speaks OpenAI's wire format: a `chat.completion` object with `choices[0].message{role, content,
refusal}`, `finish_reason`, `usage`; errors as `{"error": {"message", "type", "param", "code"}}`.
It checks the Bearer key and that a `response_format` json_schema was asked for, and answers JSON
with the schema's one required field. The "model" is deterministic: `answers` maps a substring of
the user's message to the text to answer; otherwise it answers "stub prompt <hash of the input>".
`bad_answers = n` makes the next n answers invalid (Korean text); `refuse = True` sends a refusal.
"""

from __future__ import annotations

import hashlib
import json
import time

from testbed.stubs.openai_stub import ERRORS as OPENAI_ERRORS
from testbed.stubs.openai_stub import openai_error
from testbed.stubs.provider_base import ProviderStub, Reply, StubRequest

KEY = "test-chat-key"

_ERRORS = {
    "unauthorized": OPENAI_ERRORS["unauthorized"],  # one provider: the images API's answers
    "loading": OPENAI_ERRORS["loading"],
    "forbidden": (403, "You are not allowed to sample from this model", "invalid_request_error", None),
    "rate_limit": (
        429,
        "Rate limit reached for gpt-4o-mini in organization org-stub on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1.",
        "requests",
        "rate_limit_exceeded",
    ),
    "server_error": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    "bad_request": (400, "Invalid schema for response_format 'PromptAnswer'.", "invalid_request_error", None),
}


class ChatStub(ProviderStub):
    def on_reset(self) -> None:
        self.answers: dict[str, str] = {}
        self.bad_answers = 0
        self.refuse = False

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        return openai_error(*_ERRORS[mode])

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return openai_error(404, f"Invalid URL ({request.method} {request.path})")
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return self.error_reply("unauthorized", request)
        body = request.json()
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        required = schema.get("required") or []
        if len(required) != 1 or not body.get("messages"):
            return self.error_reply("bad_request", request)
        if mode == "malformed":
            return Reply(200, b"<html>upstream proxy error</html>", {"Content-Type": "text/html"})
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        text = next((answer for needle, answer in self.answers.items() if needle in first_user), None)
        text = text or f"stub prompt {hashlib.sha256(first_user.encode()).hexdigest()[:8]}"
        message: dict[str, object] = {"role": "assistant", "content": json.dumps({required[0]: text}), "refusal": None}
        if self.refuse:
            message = {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."}
        elif self.bad_answers > 0:
            self.bad_answers -= 1
            message["content"] = json.dumps({required[0]: "따뜻한 책상"})
        return Reply(
            200,
            {
                "id": f"chatcmpl-stub{self.served}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": len(user) // 4,
                    "completion_tokens": 12,
                    "total_tokens": len(user) // 4 + 12,
                },
            },
        )
