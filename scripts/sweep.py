"""Sweeps: `python scripts/sweep.py run|worker|report SWEEP ...`, the same as
`mnist-pipeline sweep ...` (src/mnist_pipeline/sweep/cli.py says what each does).

Example (what `make sweep SWEEP=mlp JOBS=2` runs):
  python scripts/sweep.py run mlp --jobs=2 --presets=
"""

import sys

from mnist_pipeline.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="sweep.py"))
