"""The baseline of serve_overhead: plain FastAPI under uvicorn, the same work with no Serve in between.

Run by the benchmark as `python -m uvicorn benchmarks._bare_server:app --host 127.0.0.1 --port P`.
`/hop` and `/chain` call the stages in-process, so their difference to Serve is the cost of the hops.
"""

from __future__ import annotations

from fastapi import FastAPI

from benchmarks._tiny_model import TinyModelRunner

app = FastAPI()
_model = TinyModelRunner()
CHAIN_LENGTH = 4


async def _stage(x: int) -> int:
    return x + 1


@app.get("/noop")
async def noop() -> dict[str, int]:
    return {"result": 0}


@app.get("/hop")
async def hop() -> dict[str, int]:
    return {"result": await _stage(0)}


@app.get("/model")
def model() -> dict[str, float]:
    return {"result": _model()}


@app.get("/chain")
async def chain() -> dict[str, int]:
    x = 0
    for _ in range(CHAIN_LENGTH):
        x = await _stage(x)
    return {"result": x}
