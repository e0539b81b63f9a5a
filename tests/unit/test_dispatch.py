"""The ingress's push of a task to the runner: not a child of the HTTP request that made it.

With direct ingress (scripts/serve_env.sh), Serve tracks each handle call an ingress request makes
and cancels them all when the request is cancelled (a waiting client that disconnects); a push made
in the request's context took the task from the runner mid-run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray.serve import context as serve_context

from tests.support.ingress import FakeMethod, ingress_context


class Recording(FakeMethod):
    """The runner's `run`, noting whether Serve would cancel the call with the request."""

    def __init__(self) -> None:
        super().__init__()
        self.child_of_request: list[bool] = []

    def remote(self, *args: Any) -> Any:
        self.child_of_request.append(serve_context._get_serve_request_context().cancel_on_parent_request_cancel)
        return super().remote(*args)


def test_a_pushed_task_is_not_cancelled_with_the_request_that_pushed_it(tmp_path: Path) -> None:
    with ingress_context(tmp_path, {}) as ctx:
        run = Recording()
        ctx.runner.run = run

        async def in_a_request() -> None:
            inside = serve_context._RequestContext(cancel_on_parent_request_cancel=True)  # an ingress request's
            serve_context._serve_request_context.set(inside)
            assert serve_context._get_serve_request_context().cancel_on_parent_request_cancel
            ctx.dispatch("t1")
            await asyncio.gather(*ctx._dispatches)

        asyncio.run(in_a_request())
    assert run.calls == [("t1",)] and run.child_of_request == [False]
