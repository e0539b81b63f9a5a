"""Images/s of the Editor (InstructPix2Pix instruction edits) by batch size: a plain EditEngine loop, then Serve.

    python -m benchmarks.edit_batching [--sizes 1 2 4 8 16 --rounds 3 --steps 4 --size 64] [--smoke]

The same measurement as `benchmarks.batching` (which it runs with `--model editor`): every request
edits the same 64x64 photo-like image by "make the lighting warmer"; InstructPix2Pix's classifier-
free guidance over both the instruction and the image runs the UNet on 3 latents per image.
"""

from __future__ import annotations

import sys

from benchmarks import batching


def main() -> None:
    sys.argv[1:1] = ["--model", "editor"]
    batching.main()


if __name__ == "__main__":
    main()
