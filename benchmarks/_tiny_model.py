"""The "tiny model" of serve_overhead: a small MLP, identical in the bare server and in Serve."""

from __future__ import annotations

import torch

IN_FEATURES = 256
HIDDEN = 512


class TinyMLP(torch.nn.Module):
    """256 -> 512 -> 512 -> 256 with GELU: ~0.4 M parameters, well under a millisecond per call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(IN_FEATURES, HIDDEN),
            torch.nn.GELU(),
            torch.nn.Linear(HIDDEN, HIDDEN),
            torch.nn.GELU(),
            torch.nn.Linear(HIDDEN, IN_FEATURES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyModelRunner:
    """A seeded TinyMLP on one thread (as in a Ray replica) and a fixed input."""

    def __init__(self) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.model = TinyMLP().eval()
        self.x = torch.randn(1, IN_FEATURES)

    def __call__(self) -> float:
        with torch.inference_mode():
            return float(self.model(self.x).sum())
