"""Ray Serve's `serve` CLI where no `serve` script sits beside the interpreter (the lent GPU
machine's packages travel as a folder on PYTHONPATH, without console scripts):
`python -m benchmarks._serve_cli run <config>` is `serve run <config>`."""

import sys

from ray.serve.scripts import cli

if __name__ == "__main__":
    sys.exit(cli())
