"""Smoke test of benchmarks/bench_scaling.py: one tiny round of the baseline and the strategy writes
a record with the ratios ``make bench`` reports (no timing is checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]


def test_scaling_benchmark_writes_ratios_for_every_variant(tmp_path):
    out = tmp_path / "scaling.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scaling.py"), "--profiles", "smoke", "--batch", "4",
         "--rounds", "1", "--steps", "1", "--min-seconds", "0", "--out", str(out),
         # the baseline and the strategy (its overhead is computed against the baseline); the
         # other variants take the same path through the script and only cost time here
         "--variants", "package,package_mirrored2"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["name"] == "scaling" and "machine" in record and "command" in record
    smoke = record["profiles"]["smoke"]
    assert smoke["replicas"] == 2 and smoke["batch_size"] == 4
    variants = smoke["variants"]
    assert set(variants) == {"package", "package_mirrored2"}
    for values in variants.values():
        assert values["images_per_second"] > 0 and values["ratio_vs_package"] > 0
    assert variants["package"]["ratio_vs_package"] == 1.0
    assert variants["package_mirrored2"]["overhead_vs_package"] > -1.0
