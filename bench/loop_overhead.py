"""The chapter loop's per-epoch cost in instructions, for one or more versions of gradloop, in one run.

    python -m bench.loop_overhead [SRC ...]     # SRC: a gradloop source tree (default: this one's src)

Wall-clock time of a 5-microsecond epoch moves by +-20% from run to run on a shared machine;
an instruction count under ``valgrind --tool=callgrind`` is the same every run. Each version
trains the silent 16 x 7 chapter problem for 1,000 and for 3,000 epochs (``PYTHONHASHSEED=0``,
one BLAS thread); the difference over 2,000 is the cost of one epoch, start-up left out. To
compare a refactor, check the old commit out beside (``git worktree add /tmp/before REV``) and
name both trees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

PROGRAM = """
import sys, numpy as np, gradloop
rng = np.random.default_rng(0)
X = rng.standard_normal((16, 7))
Y = X @ rng.standard_normal((7, 1))
gradloop.train(X, Y, np.zeros((7, 1)), 0.01, int(sys.argv[1]))
"""


def instructions(src, epochs):
    """Instructions callgrind counts for a silent run of ``epochs`` epochs with gradloop from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.out",
                              sys.executable, "-c", PROGRAM, str(epochs)], env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind failed for {src}: {out.stderr[-500:]}")
    return int(found.group(1))


def per_epoch(src):
    return (instructions(src, 3000) - instructions(src, 1000)) / 2000


def main(argv=None):
    sources = (argv if argv is not None else sys.argv[1:]) or [os.path.join(os.path.dirname(__file__), "..", "src")]
    results = {src: per_epoch(src) for src in sources}
    first = next(iter(results.values()))
    for src, cost in results.items():
        print(f"{src}: {cost:,.0f} instructions per epoch ({cost / first:.4f}x the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
