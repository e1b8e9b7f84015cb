"""Moving code must not change what it computes: a short training run and both samplers, pinned.

``tests/data/pinned_outputs.json`` was written by the package as it stood before its modules moved
into subpackages (commit b6774d9, flat layout), with the code below written against that layout.
Any later change that alters these numbers must say why, and then rewrite the file on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.engine import sampling, training  # noqa: E402
from ddpm_helpers.engine.data import load_digits  # noqa: E402

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_outputs.json").read_text())
TINY = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                    attention_resolutions=(), attention_in_bottleneck=False, time_embedding_dim=16)


def test_training_and_sampling_compute_what_they_computed_before_the_move(tmp_path):
    images = load_digits("train")[0][:64]
    run = training.train(TINY, tmp_path / "run", steps=6, data=images, progress=False, jit_compile=False)
    np.testing.assert_allclose(run.history["loss"], PINNED["losses"], rtol=1e-5)
    sums = [float(np.sum(w)) for w in run.ema_model.get_weights()]
    np.testing.assert_allclose(sums, PINNED["ema_weight_sums"], rtol=1e-4, atol=1e-5)
    ddpm = sampling.ddpm_sample(run.ema_model, run.schedule, (4, 8, 8, 1), seed=1, progress=False).images
    ddim = sampling.ddim_sample(run.ema_model, run.schedule, (4, 8, 8, 1), steps=10, eta=0.5, seed=1,
                                progress=False).images
    np.testing.assert_allclose(np.ravel(ddpm), PINNED["ddpm"], atol=1e-4)
    np.testing.assert_allclose(np.ravel(ddim), PINNED["ddim"], atol=1e-4)
