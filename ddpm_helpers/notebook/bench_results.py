"""Reading the benchmark results that the appendix "Running it faster" shows.

The scripts in ``benchmarks/`` write one JSON record per run,
``benchmarks/results/<name>-<YYYYmmdd-HHMMSS>.json``, holding the numbers, the date, the exact
command, the machine and the load average at the start and the end. The appendix reads the
newest record of each benchmark with :func:`latest` and describes its context with
:func:`context_text`; a benchmark not run yet reads as ``None``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RESULT_FILE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)-(?P<stamp>\d{8}-\d{6})\.json$")
NOT_MEASURED = ("not measured yet (run `make bench` / `make bench-book` in a clone of "
                "the repository)")


def results_folder(start: Path | None = None) -> Path | None:
    """``benchmarks/results`` of the repository this is run from (None outside a clone)."""
    start = Path.cwd() if start is None else Path(start)
    for base in (start, *start.parents):
        if (base / "benchmarks" / "results").is_dir():
            return base / "benchmarks" / "results"
    return None


def latest(name: str, folder: Path | None = None) -> dict | None:
    """The newest record of benchmark ``name`` with its file name under ``"file"``; or None."""
    folder = results_folder() if folder is None else Path(folder)
    if folder is None:
        return None
    found = sorted((match["stamp"], path) for path in folder.glob("*.json")
                   if (match := RESULT_FILE.match(path.name)) and match["name"] == name)
    if not found:
        return None
    path = found[-1][1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable benchmark record ({error}); "
                         "delete it or run the benchmark again.") from None
    data["file"] = path.name
    return data


def machine_text(record: dict) -> str:
    """'CPU, N cores; Python x, TensorFlow y, Keras z' of a record."""
    machine = record.get("machine", {})
    keras = f", Keras {machine['keras']}" if "keras" in machine else ""
    return (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
            f"Python {machine.get('python', '?')}, "
            f"TensorFlow {machine.get('tensorflow', '?')}{keras}")


def was_busy(record: dict) -> bool:
    """True when the 1-minute load average exceeded the core count (times are inflated)."""
    load = record.get("load_average") or {}
    machine = record.get("machine", {})
    cores = machine.get("usable_cores") or machine.get("cores")
    values = [v[0] for v in (load.get("start"), load.get("end")) if v]
    return bool(cores and values and max(values) > cores)


def context_text(record: dict) -> str:
    """One sentence: when, where and with which command a record was measured."""
    busy = " The machine was busy, so absolute times are inflated." if was_busy(record) else ""
    return (f"Measured {record.get('date', '?')} on {machine_text(record)}, with "
            f"`{record.get('command', '?')}`.{busy}")


# Peak throughput from the vendors' data sheets, in TFLOP/s (dense, no sparsity): float32 and
# the mixed-precision units (float16 tensor cores on NVIDIA GPUs, bfloat16 on TPUs; a TPU has
# no float32 peak of its own). Used by the chapter "Scaling up" for estimates, never measured.
DEVICE_PEAKS = {
    "T4": {"name": "NVIDIA T4", "float32": 8.1, "mixed": 65.0},
    "A100": {"name": "NVIDIA A100", "float32": 19.5, "mixed": 312.0},
    "TPU v5e": {"name": "TPU v5e (one chip)", "float32": None, "mixed": 197.0},
}


def training_estimate(flops_per_image: float, *, batch_size: int, steps: int,
                      peak_tflops: float, efficiency=(0.25, 0.5),
                      passes: float = 3.0) -> dict:
    """Time of a training run on a device, estimated on paper (chapter "Scaling up").

    A training step on ``batch_size`` images costs about ``passes`` forward passes (the
    backward pass costs about twice the forward one: a rule of thumb) of ``flops_per_image``
    FLOPs each (2 per multiply-accumulate). The device is assumed to reach between
    ``efficiency[0]`` and ``efficiency[1]`` of its peak ``peak_tflops``. Returns the FLOPs per
    step and, as (fast, slow) pairs, seconds per step, images per second (slow, fast) and hours
    for ``steps`` steps. The appendix "Running it faster" makes the same estimate for a T4.
    """
    per_step = passes * flops_per_image * batch_size
    rates = [peak_tflops * 1e12 * e for e in sorted(efficiency, reverse=True)]
    seconds = tuple(per_step / rate for rate in rates)
    return {
        "flops_per_step": per_step,
        "seconds_per_step": seconds,
        "images_per_second": tuple(batch_size / s for s in reversed(seconds)),
        "hours": tuple(steps * s / 3600 for s in seconds),
    }


def xla_ratios(record: dict, batch_size: int | None = None) -> dict[tuple[int, int], float]:
    """Images per second with XLA over those without, per ``(threads, batch)`` of a
    ``cpu_options`` record (only ``batch_size`` if given)."""
    speed = {(r["threads"], r["batch"], r["xla"]): r["images_per_second"] for r in record["table"]}
    return {(threads, batch): speed[(threads, batch, True)] / speed[(threads, batch, False)]
            for threads, batch, xla in speed
            if not xla and (threads, batch, True) in speed and batch_size in (None, batch)}


def xla_noise(record: dict, threads: int, batch: int) -> float:
    """The largest ratio between two rounds of one variant (with or without XLA) of a setting of a
    ``cpu_options`` record: a speed ratio closer to 1 than this is noise."""
    variants = record["details"][str(threads)][str(batch)]["variants"].values()
    return max(max(v["seconds_per_step_rounds"]) / min(v["seconds_per_step_rounds"]) for v in variants)


def xla_verdict(record: dict, batch_size: int | None = None) -> str:
    """What XLA did to the step in a ``cpu_options`` record: each setting's speed ratio judged
    against that setting's own round-to-round spread (:func:`xla_noise`)."""
    ratios = xla_ratios(record, batch_size)
    if not ratios:
        raise ValueError(f"{record.get('file', 'the record')} has no setting measured with and without XLA"
                         + (f" at batch {batch_size}" if batch_size else "") + ".")
    noise = {setting: xla_noise(record, *setting) for setting in ratios}
    helped = sum(r > noise[s] for s, r in ratios.items())
    slowed = sum(r < 1 / noise[s] for s, r in ratios.items())
    unclear = len(ratios) - helped - slowed
    within = "changed the speed by less than the spread between its rounds"
    if unclear == len(ratios):
        return f"{within} (not resolved) in every setting measured"
    if helped == len(ratios):
        return "helped in every setting measured"
    if slowed == len(ratios):
        return "slowed down every setting measured"
    total = _number_word(len(ratios))
    parts = []
    for count, text in ((helped, "helped in {}"), (slowed, "slowed down {}")):
        if count:
            parts.append(text.format(_number_word(count) + ("" if parts else f" of the {total} settings")))
    if unclear:
        parts.append(f"{within} in the remaining {_number_word(unclear) if unclear > 1 else 'one'} "
                     "(not resolved)")
    return ", ".join(parts[:-1]) + ", and " + parts[-1] if len(parts) > 2 else " and ".join(parts)


def _number_word(n: int) -> str:
    """1 -> "one", ..., 9 -> "nine"; larger numbers as digits."""
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n - 1] if 1 <= n <= 9 else f"{n:,}"
