"""The GPU check (issue 23): one run of the CelebA path that a maintainer with a GPU starts with
``benchmarks/gpu_check.sh [RESULTS_FOLDER]`` and that takes under 10 minutes.

1. A CelebA-shaped synthetic archive (random 178x218 JPEGs, ``make_fake_celeba``) prepared as the
   recipe does (``python -m ddpm_helpers prepare-celeba``'s function ``prepare_celeba``).
2. The ``celeba`` profile trained for a few hundred steps in float32 and with mixed precision,
   each with and without XLA: images/s after compiling, and the peak GPU memory
   (``tf.config.experimental.get_memory_info('GPU:0')['peak']``) where there is a GPU.
3. A sample grid of the last run (PNG), and one resume of it (a few more steps).
4. One JSON record and the grid in the results folder (default ``benchmarks/results``).

``GPU_CHECK_TINY=1``: smoke-sized (the ``smoke`` profile on the same faces folder, a handful of
steps, float32 and mixed precision without XLA): the same code path in seconds on a CPU; ``tests/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(results: Path) -> int:
    import tensorflow as tf

    from ddpm_helpers.engine.celeba import make_fake_celeba, prepare_celeba
    from ddpm_helpers.engine.sample_files import machine_description
    from ddpm_helpers.engine.sampling import sample
    from ddpm_helpers.engine.training import train
    from ddpm_helpers.notebook.plotting import save_image_grid
    from ddpm_helpers.profiles import get_profile

    tiny = os.environ.get("GPU_CHECK_TINY") == "1"
    gpu = bool(tf.config.list_physical_devices("GPU"))
    profile = get_profile("smoke" if tiny else "celeba")
    steps = int(os.environ.get("GPU_CHECK_STEPS", 3 if tiny else 300))
    settings = [(False, False), (True, False)] if tiny else [(False, False), (False, True), (True, False), (True, True)]
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    began = time.perf_counter()
    archive = make_fake_celeba(work / "archive.zip", count=64 if tiny else 2048)
    prepared = prepare_celeba(archive, work / "celeba32", profile.image_size)
    record = {"tiny": tiny, "profile": profile.name, "steps": steps, "batch_size": profile.batch_size,
              "faces": prepared["written"], "prepare_seconds": round(prepared["seconds"], 2), "runs": [],
              "machine": machine_description()}
    run = None
    for mixed, xla in settings:
        if gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        run_dir = work / f"run-{'mp' if mixed else 'fp32'}-{'xla' if xla else 'noxla'}"
        run = train(profile, run_dir, steps=steps, data=f"folder:{work / 'celeba32'}", progress=False,
                    mixed_precision=mixed, jit_compile=xla, tensorboard=True, checkpoint_every=steps)
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpu else None
        entry = {"mixed_precision": mixed, "xla": xla, "precision": run.config.get("precision"),
                 "steps_per_second": run.steps_per_second,
                 "images_per_second": run.steps_per_second * profile.batch_size,
                 "train_seconds": run.train_seconds, "peak_gpu_bytes": peak, "final_loss": run.history["loss"][-1]}
        record["runs"].append(entry)
        print(json.dumps(entry), flush=True)
    grid = sample(run.ema_model, run.schedule, 16, (profile.image_size, profile.image_size, profile.channels),
                  sampler="ddim", steps=min(50, run.schedule.timesteps), seed=0)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    grid_path = save_image_grid(grid.images, results / f"gpu-check-{stamp}.png", columns=8,
                                scale=max(1, 64 // profile.image_size))
    resumed = train(None, run.run_dir, steps=steps + max(2, steps // 10), resume=True, progress=False)
    record.update(grid=str(grid_path), sample_seconds=grid.seconds, resumed_to=resumed.step,
                  resume_ok=resumed.step == steps + max(2, steps // 10), total_seconds=time.perf_counter() - began)
    out = results / f"gpu-check-{stamp}.json"
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out} and {grid_path} in {record['total_seconds']:.0f} s")
    return 0 if record["resume_ok"] else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")))
