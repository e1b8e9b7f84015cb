"""A trained run as the later chapters use it (chapter "Training", ``sec-training``): the model,
its EMA (which sampling uses), the loss history and the configuration; :func:`load_run` reads one
from its run folder (:mod:`ddpm_helpers.engine.runs`, :mod:`ddpm_helpers.engine.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from pathlib import Path

from ddpm_helpers.engine.checkpoints import RunCheckpoint, list_checkpoints
from ddpm_helpers.engine.runs import (CONFIG_FILE, config_identity, profile_from_dict, read_config, resume_command,
                                      run_folder, stale_reason)
from ddpm_helpers.engine.train_step import build_models


@dataclasses.dataclass
class TrainedRun:
    """A model trained by :func:`.training.train` (or loaded by :func:`load_run`).

    ``model`` holds the last weights, ``ema_model`` their EMA (use it for sampling);
    ``history`` is a dict of lists, one entry per step: ``step``, ``loss`` (the raw mini-batch
    loss), ``running_loss`` (its exponential moving average, decay 0.98) and ``lr``;
    ``config`` is what ``config.json`` holds; ``step`` the steps done; ``train_seconds`` the
    wall time spent training (all sessions of a resumed run together) and ``steps_per_second``
    the speed measured after the first, compiling, step.
    """

    model: object
    ema_model: object
    schedule: object
    profile: object
    history: dict
    run_dir: Path
    config: dict
    step: int = 0
    train_seconds: float = float("nan")
    steps_per_second: float = float("nan")
    loaded: bool = False
    optimizer: object = None  # the Adam optimizer after training (None for a loaded run)

    @property
    def complete(self) -> bool:
        """Whether the run has trained all the steps its configuration asks for."""
        return self.step >= int(self.config["steps"])

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a class-conditional run, or ``None``."""
        return self.config.get("num_classes")

    @property
    def label_dropout(self) -> float:
        """The probability with which training replaced a label by the null label."""
        return float(self.config.get("label_dropout", 0.0))

    def __repr__(self) -> str:
        return (f"TrainedRun({str(self.run_dir)!r}, profile={self.profile.name!r}, step={self.step}/"
                f"{self.config['steps']}, {'loaded' if self.loaded else 'trained'})")


def load_run(run_dir, *, checkpoint=None) -> TrainedRun:
    """The run in ``run_dir``: its ``config.json`` and newest checkpoint, or the one of step
    ``checkpoint`` (a step number, or a name such as ``"ckpt-500"``).

    Raises ``FileNotFoundError`` when the folder holds no run or no such checkpoint, listing
    those it holds, and ``ValueError`` for a run of an older format.
    """
    from ddpm_helpers.method.schedules import make_schedule

    run_dir = run_folder(run_dir)
    problem = stale_reason(run_dir)
    if problem:
        raise ValueError(f"Cannot load {run_dir}: {problem}. Train it again: python -m ddpm_helpers train --out "
                         f"{shlex.quote(str(run_dir))} --overwrite (load_or_train moves it aside by itself).")
    config = read_config(run_dir)
    available = list_checkpoints(run_dir)
    if not available:
        raise FileNotFoundError(
            f"{run_dir} has a {CONFIG_FILE} but no checkpoint: training stopped before its first checkpoint. "
            f"Continue it (with its own settings) with: {resume_command(run_dir)}")
    step = available[-1][0] if checkpoint is None else _checkpoint_step(checkpoint, available, run_dir)
    profile = profile_from_dict(config["profile"])
    model, ema_model = build_models(profile, config.get("num_classes"))
    _, history, meta = RunCheckpoint(run_dir, model, ema_model, keep=None).restore(step)
    return TrainedRun(model=model, ema_model=ema_model, schedule=make_schedule(profile.schedule, profile.timesteps),
                      profile=profile, history=history, run_dir=run_dir, config=config, step=step,
                      train_seconds=float(meta.get("train_seconds") or float("nan")),
                      steps_per_second=float(meta.get("steps_per_second") or float("nan")), loaded=True)


def _checkpoint_step(checkpoint, available, run_dir) -> int:
    steps = {step: path.name for step, path in available}
    text = Path(str(checkpoint)).name
    number = text.rsplit("-", 1)[-1].split(".", 1)[0]
    if number.isdigit() and int(number) in steps and (text == number or text.startswith("ckpt-")):
        return int(number)
    raise FileNotFoundError(f"{run_dir} has no checkpoint {checkpoint!r}; it holds "
                            f"{', '.join(steps.values())} (pass one of those names or its step number).")


def starting_point(run_dir) -> dict:
    """What a run that starts from the trained run in ``run_dir`` records as its ``init_from``:
    ``{"run": folder name, "step": its newest checkpoint, "identity": a hash of its configuration}``
    (so that retraining the source makes the runs built on it stale). The source must be complete.
    """
    run_dir = run_folder(run_dir)
    problem = stale_reason(run_dir) or (None if (run_dir / CONFIG_FILE).exists() else "it holds no run")
    if problem:
        raise ValueError(f"Cannot start from {run_dir}: {problem}. Pass the folder of a trained run.")
    config, available = read_config(run_dir), list_checkpoints(run_dir)
    if not available or available[-1][0] < int(config["steps"]):
        done = available[-1][0] if available else 0
        raise ValueError(f"Cannot start from {run_dir}: it has trained {done} of its {config['steps']} steps. "
                         f"Finish it first: {resume_command(run_dir)}")
    identity = json.dumps(config_identity(config), sort_keys=True, default=str)
    return {"run": run_dir.name, "step": available[-1][0],
            "identity": hashlib.sha256(identity.encode()).hexdigest()[:12]}


def start_from(model, run_dir) -> list[str]:
    """Set ``model``'s weights to the EMA weights of the trained run in ``run_dir``, layer by
    layer (matched by name); layers the source lacks (the label embedding of a conditional model
    started from an unconditional one) start at zero, so that the new model computes exactly what
    the source did. Returns the names of those layers.
    """
    import numpy as np

    source = load_run(run_dir).ema_model
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    zeroed = []
    for layer in (layer for layer in model.layers if layer.weights):
        if layer.name not in theirs:
            layer.set_weights([np.zeros(w.shape, w.dtype) for w in layer.get_weights()])
            zeroed.append(layer.name)
            continue
        weights = theirs[layer.name].get_weights()
        shapes = [w.shape for w in weights], [tuple(w.shape) for w in layer.get_weights()]
        if shapes[0] != shapes[1]:
            raise ValueError(f"Cannot start from {run_dir}: its layer {layer.name!r} has weights of shapes "
                             f"{shapes[0]}, this model's {shapes[1]}. Start from a run of the same architecture.")
        layer.set_weights(weights)
    return zeroed
