"""What every benchmark script of ``benchmarks/`` shares: the machine description and the JSON record.

A record (``benchmarks/results/<name>-<YYYYmmdd-HHMMSS>.json``) always holds ``benchmark`` (what
was compared), ``date``, ``command`` (the exact command line), ``machine`` (CPU model from
/proc/cpuinfo, cores, versions, devices, TensorFlow's thread settings) and ``load_average`` (the
1-, 5- and 15-minute load averages at the start and the end: on a shared machine a 1-minute
load above the number of cores means the absolute times are inflated; ratios measured side by
side suffer less). The book's chapter "Performance" reads the newest record of each benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_description() -> dict:
    """The package's description (CPU, cores, OS, Python, TensorFlow, devices; the one stored beside
    cached samples) plus usable cores, memory, Keras and NumPy versions and thread settings."""
    import keras
    import numpy as np
    import tensorflow as tf

    from ddpm_helpers.engine.sample_files import machine_description as basic_description

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        with open("/proc/meminfo") as handle:
            memory_gb = round(int(handle.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        memory_gb = None
    return {
        **basic_description(),
        "usable_cores": usable,
        "memory_gb": memory_gb,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def command_line() -> str:
    """The command that is running, as one could type it again from the repository root."""
    python = sys.executable
    try:
        python = os.path.relpath(python, ROOT) if Path(python).is_relative_to(ROOT) else python
    except ValueError:
        pass
    script = sys.argv[0]
    try:
        script = os.path.relpath(Path(script).resolve(), ROOT)
    except ValueError:
        pass
    return shlex.join([python, script, *sys.argv[1:]])


class Record:
    """Collects a benchmark's numbers and writes them, with the context, as JSON."""

    def __init__(self, name: str, benchmark: str):
        self.name = name
        self.data = {
            "benchmark": benchmark,
            "name": name,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": command_line(),
            "load_average": {"start": load_average()},
        }
        self.began = time.perf_counter()

    def write(self, out: str | os.PathLike | None = None, **numbers) -> Path:
        self.data.update(numbers)
        self.data["machine"] = machine_description()
        self.data["load_average"]["end"] = load_average()
        self.data["wall_seconds"] = round(time.perf_counter() - self.began, 2)
        cores = self.data["machine"]["usable_cores"] or 1
        loads = [v[0] for v in self.data["load_average"].values() if v]
        self.data["machine_was_busy"] = bool(loads) and max(loads) > cores
        path = Path(out) if out else RESULTS / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=1, default=float) + "\n")
        print(f"wrote {path}")
        return path


def model_to_time(run_dir: str | None, profile_name: str | None):
    """``(profile, model, schedule)``: the EMA model of a trained run, or fresh weights for a profile.

    Sampling time does not depend on what the weights are, so the sampling benchmarks can run
    without a trained model; ``--run`` times a trained one instead.
    """
    from ddpm_helpers import get_profile
    from ddpm_helpers.method.schedules import schedule_from_profile

    if run_dir:
        from ddpm_helpers.engine.training import load_run

        trained = load_run(run_dir)
        return trained.profile, trained.ema_model, trained.schedule
    from ddpm_helpers.method.unet import build_unet_for_profile

    profile = get_profile(profile_name)
    return profile, build_unet_for_profile(profile), schedule_from_profile(profile)


def median(values) -> float:
    return float(statistics.median(values))


def summarize_rounds(per_step, steps_run, first_step, batch_size, *, baseline, ratio_key):
    """Per variant: median seconds per step over the rounds, the rounds, images per second, the
    first (tracing) step, and ``ratio_key``: the baseline's median step time over this one's
    (above 1: faster than ``baseline``; None when the baseline was not timed)."""
    base = median(per_step[baseline]) if baseline in per_step else None
    results = {}
    for name, rounds in per_step.items():
        seconds = median(rounds)
        results[name] = {
            "seconds_per_step": seconds,
            "seconds_per_step_rounds": rounds,
            "steps_per_round": steps_run[name],
            "images_per_second": batch_size / seconds,
            "first_step_seconds": first_step[name],
            ratio_key: base / seconds if base else None,
        }
    return results
