"""Write a large generated regression data set as a folder of Parquet files, chunk by chunk.

    python -m bench.make_big DIR [--rows 10000000] [--features 32] [--files 20] [--seed 0]

Each file holds ``rows / files`` rows in row groups of 250,000: features ``x0..x{d-1}``
(standard normal, a different scale per column), target ``y = X w + 3 + noise``. Only one
file's rows are in memory at a time, so the data set may be far larger than memory.
The true weights are written to ``DIR/_truth.json`` (pyarrow and Dask skip files named with a
leading underscore).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROW_GROUP = 250_000


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.make_big", description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(args.folder, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    d = args.features
    scales = np.exp(rng.uniform(-2, 2, d))  # columns of different sizes: --standardize matters
    weights = rng.standard_normal(d)
    per_file = -(-args.rows // args.files)
    names = [f"x{j}" for j in range(d)]
    written = 0
    for i in range(args.files):
        rows = min(per_file, args.rows - written)
        if rows <= 0:
            break
        X = rng.standard_normal((rows, d)) * scales
        y = X @ weights + 3.0 + 0.5 * rng.standard_normal(rows)
        table = pa.table({**{name: X[:, j] for j, name in enumerate(names)}, "y": y})
        pq.write_table(table, os.path.join(args.folder, f"part-{i:04d}.parquet"), row_group_size=ROW_GROUP)
        written += rows
        print(f"part {i + 1}/{args.files}: {written:,} rows", file=sys.stderr)
    with open(os.path.join(args.folder, "_truth.json"), "w") as fh:
        json.dump({"weights": weights.tolist(), "scales": scales.tolist(), "intercept": 3.0, "rows": written}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
