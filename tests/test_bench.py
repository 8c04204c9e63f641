"""Smoke test of the benchmark harness: every workload runs and the reports are written.

No timing is asserted (tests never assert wall-clock times); the checks are
that each contender ran, the JSON holds a positive median for each, and the
Markdown table has a row per contender.
"""

import json

from bench.__main__ import main


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    assert main(["--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench-quick.json").read_text())
    assert report["quick"] is True
    assert {r["key"] for r in report["results"]} >= {"chapter-small", "linear-large-f64", "mlp-minibatch"}
    table = (tmp_path / "bench-quick.md").read_text()
    for result in report["results"]:
        assert result["baseline"] in result["medians"] and result["baseline"].startswith("gradloop")
        for name, median in result["medians"].items():
            assert median > 0
            assert f"| {result['name']} | {name} |" in table
    assert report["environment"]["numpy"]
