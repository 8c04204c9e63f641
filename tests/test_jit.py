"""Loops compiled on first use: numba stays unloaded until then, and threads may make that first call together."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gradloop.fast.jit import compiled


@compiled()
def scaled_sum(a, scale):
    total = 0.0
    for i in range(a.size):
        total += scale * a[i]
    return total


def test_import_and_training_small_models_do_not_load_numba():
    code = ("import sys, numpy as np, gradloop; "
            "gradloop.train(np.ones((20, 2)), np.ones(20), np.zeros(2), 0.1, 5); "
            "assert 'numba' not in sys.modules, 'numba loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_concurrent_first_calls_all_get_the_compiled_result():
    a = np.arange(1000, dtype=np.float64)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda scale: scaled_sum(a, scale), [1.0, 2.0, 3.0, 4.0]))
    assert results == [scaled_sum.python(a, s) for s in (1.0, 2.0, 3.0, 4.0)]
    assert results[0] == a.sum()
