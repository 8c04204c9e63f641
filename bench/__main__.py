"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...] [--repeats N] [--out DIR]``.

Every contender of a workload runs in this one process, interleaved repetition
by repetition so that drift hits all of them alike (each repetition in another
order, so that no contender always follows the same one); the table reports the
median per unit (epoch), gradloop's ratio to each peer and to the limit, and
the versions and BLAS in use. Results go to DIR/bench.json and DIR/bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import scale as scale_workloads
from . import workloads

WORKLOADS = {**workloads.WORKLOADS, **scale_workloads.WORKLOADS}


def environment():
    """Versions, BLAS and threads: what the numbers depend on."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        import gradloop

        info["gradloop"] = gradloop.__version__
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        info["blas"] = "unknown"
    for name in ("torch", "sklearn"):
        try:
            module = __import__(name)
            info[name] = module.__version__
        except ImportError:
            info[name] = None
    try:
        from threadpoolctl import threadpool_info

        info["blas_threads"] = [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()]
    except ImportError:
        pass
    return info


def peak_memory(fn):
    """Peak bytes NumPy allocated while ``fn`` ran (tracemalloc sees NumPy's allocations, not PyTorch's)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(work, repeats):
    """Median seconds per unit for every contender, interleaving repetitions."""
    times = {name: [] for name in work.contenders}
    for fn in work.contenders.values():
        fn()  # warm-up: imports, allocations, BLAS thread start
    contenders = list(work.contenders.items())
    for rep in range(repeats):
        # Each repetition starts one contender further on, so each follows every other in turn: what
        # one leaves behind (a BLAS's threads still spinning, caches full of its data) hits all alike.
        for name, fn in contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]:
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / work.units)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def _fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_memory(extra, input_bytes):
    """Extra bytes, and as a fraction of the input data when that is large enough to matter."""
    if extra is None:
        return "n/a"
    text = f"{extra / 2**20:.1f} MiB"
    if input_bytes and input_bytes >= 2**24:
        text += f" ({extra / input_bytes:.2f}x X)"
    return text


def markdown(results, env):
    lines = ["| workload | contender | median per epoch | gradloop / this | peak extra memory |",
             "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        base = r["medians"][r["baseline"]]
        for name, median in r["medians"].items():
            ratio = "" if name == r["baseline"] else f"{base / median:.2f}x"
            lines.append(f"| {r['name']} | {name} | {_fmt_time(median)} | {ratio} | "
                         f"{_fmt_memory(r['peak_extra_bytes'].get(name), r['input_bytes'])} |")
    lines.append("")
    lines.append("Peak extra memory: what NumPy allocated during one call beyond the inputs (tracemalloc); "
                 "n/a where the library allocates outside NumPy.")
    lines.append("")
    lines.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None))
    for r in results:
        for note in r["notes"]:
            lines.append(f"- {r['name']}: {note}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not a measurement)")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="run only these workloads")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per contender (median; >= 5)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    repeats = max(args.repeats, 1 if args.quick else 5)
    env = environment()
    results = []
    for key in args.only or WORKLOADS:
        work = WORKLOADS[key](args.quick)
        try:
            medians, all_times = measure(work, repeats)
            # Memory beyond the inputs (allocated before tracing), for the NumPy-based contenders.
            memory = {name: peak_memory(fn) for name, fn in work.contenders.items()
                      if not name.startswith(("pytorch", "scikit-learn", "dask-ml"))}
        finally:
            if work.close is not None:
                work.close()
        results.append({"key": key, "name": work.name, "unit": work.unit, "baseline": work.baseline,
                        "limit": work.limit, "medians": medians, "times": all_times, "notes": work.notes,
                        "peak_extra_bytes": memory, "input_bytes": work.input_bytes})
        base = medians[work.baseline]
        print(f"{work.name}:", file=sys.stderr)
        for name, median in medians.items():
            extra = "" if name == work.baseline else f"   gradloop / this = {base / median:.2f}x"
            print(f"  {name:40s} {_fmt_time(median):>10s} per {work.unit}{extra}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    with open(os.path.join(args.out, f"bench{suffix}.json"), "w") as f:
        json.dump({"environment": env, "repeats": repeats, "quick": args.quick, "results": results}, f, indent=1)
    table = markdown(results, env)
    with open(os.path.join(args.out, f"bench{suffix}.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
