"""benchmarks/gpu_check.sh, smoke-sized (GPU_CHECK_TINY=1): the GPU check's whole path runs on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_writes_a_record_and_a_grid(tmp_path):
    env = {**os.environ, "GPU_CHECK_TINY": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (record_path,) = tmp_path.glob("gpu-check-*.json")
    record = json.loads(record_path.read_text())
    assert record["tiny"] and record["resume_ok"] and record["faces"] == 64
    assert [(r["mixed_precision"], r["xla"]) for r in record["runs"]] == [(False, False), (True, False)]
    assert all(r["images_per_second"] > 0 for r in record["runs"])
    assert Path(record["grid"]).is_file() and Path(record["grid"]).parent == tmp_path
