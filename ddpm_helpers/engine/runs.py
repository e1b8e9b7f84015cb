"""Run folders: what a trained run is, when it can be reused or resumed, and where stale ones go.

A run folder (chapter "Training", ``sec-training``) holds ``config.json`` (:func:`make_config`)
and the checkpoints of :mod:`ddpm_helpers.engine.checkpoints`. Its ``format`` is
``FORMAT_VERSION``, a number bumped by hand whenever the files or the training math change
(the model, the schedule, the loss, the step): a run of another format is *stale*. Editing a
docstring changes nothing.

A stale run, or one of another configuration, is never deleted: :func:`move_aside` renames it
``NAME.stale-<n>`` and says so. :func:`resume_differences` separates the settings a resumed run
may change (learning rate, total steps, the seed of the batches and noise, XLA) from those it may
not (model, data, schedule, loss). :func:`run_lock` is held by every writer of a run folder: a
second process is refused, or waits (two chapters built at once train the shared model once).
:func:`run_folder` is the one resolution of a folder name (``~``, relative paths) and
:func:`prepare_run_dir` never moves or writes over anything but a run of this package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

# Bump by hand when a trained run's files or the training math change (old runs become stale).
# 1: positional .npz checkpoints and a hash of the modules' bytes; 2: tf.train.Checkpoint, Philox RNG.
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
RUNS_DIR_ENV_VAR = "DDPM_RUNS_DIR"
# Profile fields that do not change what training computes (never compared).
NON_TRAINING_FIELDS = ("description", "num_eval_samples", "checkpoint_every")
# Settings a resumed run may change (a note says what changed): they steer the rest of training
# but not what the checkpoint's weights mean.
TRAINING_ONLY = ("profile.learning_rate", "profile.train_steps", "steps", "seed", "lr_schedule", "warmup_steps",
                 "lr_decay_steps", "xla",
                 "precision")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_config(profile, *, data_spec: str, data_fingerprint: str, steps: int, seed: int,
                num_classes: int | None, label_dropout: float, lr_schedule: str, xla: bool | None = None) -> dict:
    """The JSON-able description of a run; runs whose :func:`config_identity` agree are interchangeable."""
    import keras
    import tensorflow as tf

    from ddpm_helpers import __version__
    from ddpm_helpers.engine.train_step import RNG_ALGORITHM

    return {
        "format": FORMAT_VERSION,
        "profile": _plain(profile.to_dict()),
        "data": data_spec,
        "data_fingerprint": data_fingerprint,
        "steps": int(steps),
        "seed": int(seed),
        "num_classes": None if not num_classes else int(num_classes),
        "label_dropout": float(label_dropout),
        "lr_schedule": lr_schedule,
        "rng": RNG_ALGORITHM,
        "xla": None if xla is None else bool(xla),
        "precision": "float32",  # the Keras dtype policy of the computation (the weights are float32)
        "changes": [],  # training-only settings changed on resume: [{"step": s, "seed": [old, new]}, ...]
        "versions": {"ddpm_helpers": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": sys.version.split()[0]},
    }


def config_identity(config: dict) -> dict:
    """The parts of a config that decide the trained weights (versions and descriptions left out)."""
    identity = {k: v for k, v in config.items() if k not in ("versions", "replicas")}
    identity["profile"] = {k: v for k, v in config.get("profile", {}).items() if k not in NON_TRAINING_FIELDS}
    return identity


def config_differences(stored: dict, requested: dict, ignore=()) -> list[str]:
    """Names of the identity fields that differ (``profile.widths``, ``steps``, ``format``, ...)."""
    a, b = config_identity(stored), config_identity(requested)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key == "profile":
            pa, pb = a.get(key, {}), b.get(key, {})
            diffs += [f"profile.{k}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
        elif a.get(key) != b.get(key):
            diffs.append(key)
    return [d for d in diffs if d not in ignore]


def _value(config: dict, name: str):
    if name.startswith("profile."):
        return config.get("profile", {}).get(name[len("profile."):])
    return config.get(name)


def resume_differences(stored: dict, requested: dict) -> tuple[list[str], dict]:
    """``(refused, changed)``: settings that forbid resuming, and training-only ones that changed
    (``{name: [stored, requested]}``)."""
    diffs = config_differences(stored, requested, ignore=("changes",))
    refused = [d for d in diffs if d not in TRAINING_ONLY]
    changed = {d: [_value(stored, d), _value(requested, d)] for d in diffs if d in TRAINING_ONLY}
    return refused, changed


def describe_changes(changed: dict) -> str:
    """``"name old -> new; ..."`` for ``changed``, a dict ``{name: (old, new)}`` of settings."""
    return "; ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items())


def profile_from_dict(values: dict):
    """Rebuild a :class:`~ddpm_helpers.profiles.Profile` from ``Profile.to_dict()`` (e.g. read from JSON)."""
    from ddpm_helpers.profiles import Profile

    fields = {f.name for f in dataclasses.fields(Profile)}
    missing = sorted(f.name for f in dataclasses.fields(Profile)
                     if f.name not in values and f.default is dataclasses.MISSING)
    if missing:
        raise ValueError(f"The stored profile lacks the field(s) {', '.join(missing)}; retrain this run.")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
    return Profile(**kwargs)


def _atomic_write_bytes(path: Path, payload: bytes):
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_config(run_dir, config: dict):
    """Write ``config`` to ``run_dir/config.json``; a reader sees the old file or the new one."""
    _atomic_write_bytes(Path(run_dir) / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())


def read_config(run_dir) -> dict:
    """``run_dir/config.json``, or ``FileNotFoundError`` saying how to create it."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No trained run in {str(run_dir)!r}: {CONFIG_FILE} is missing. Train one with "
            f"training.load_or_train(profile) or `python -m ddpm_helpers train --out {run_dir}`."
        )
    return json.loads(path.read_text())


def stale_reason(run_dir) -> str | None:
    """Why the run in ``run_dir`` cannot be used by this package (None if it can, or if there is none)."""
    from ddpm_helpers.engine.checkpoints import old_format_files

    run_dir = Path(run_dir)
    if old_format_files(run_dir):
        return "it was written by an older version of ddpm_helpers (ckpt-*.npz checkpoints, format 1)"
    if not (run_dir / CONFIG_FILE).exists():
        return None
    try:
        stored = read_config(run_dir)
    except (OSError, ValueError) as error:
        return f"its {CONFIG_FILE} is unreadable ({error})"
    if stored.get("format") != FORMAT_VERSION:
        return f"it has format {stored.get('format')}, this version of ddpm_helpers reads format {FORMAT_VERSION}"
    return None


def run_folder(path) -> Path:
    """The run folder ``path`` as every command and function uses it: ``~`` expanded, relative
    paths kept relative to the working directory (spaces are fine). ``ValueError`` for a file."""
    run_dir = Path(os.path.expanduser(str(path)))
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{str(run_dir)!r} is a file, not a run folder: pass a folder (new or holding a run) "
                         "as --out / run_dir.")
    return run_dir


def is_run_folder(run_dir) -> bool:
    """Whether ``run_dir`` holds a run of this package: a ``config.json`` or checkpoint files."""
    from ddpm_helpers.engine.checkpoints import CHECKPOINT_NAME

    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.name in (CONFIG_FILE, "checkpoint") or p.name.startswith(f"{CHECKPOINT_NAME}-")
                                    for p in run_dir.iterdir())


def move_aside(run_dir, reason: str) -> Path:
    """Rename the run in ``run_dir`` to ``NAME.stale-<n>`` (the first free n), print where it went,
    return the new path. Refuses a folder that holds no run: only runs are moved."""
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise ValueError(f"{run_dir} holds no run (no {CONFIG_FILE} or checkpoint): nothing was moved.")
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(target)
    print(f"Moved the run in {run_dir} aside to {target} ({reason}); delete it when you no longer need it.")
    return target


def stored_config(run_dir) -> dict | None:
    """The ``config.json`` of the run in ``run_dir`` when it is one this version can continue, else None."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() or stale_reason(run_dir):
        return None
    return read_config(run_dir)


def _quote(path) -> str:
    import shlex

    return shlex.quote(str(path))


def resume_command(run_dir, strategy: str | None = None, replicas: int | None = None) -> str:
    """The command that continues the run in ``run_dir`` (its other settings come from its
    ``config.json``)."""
    extra = f" --strategy {strategy}" if strategy and strategy != "none" else ""
    extra += f" --replicas {replicas}" if replicas else ""
    return f"python -m ddpm_helpers train --out {_quote(run_dir)} --resume{extra}"


def _unrelated_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []


def prepare_run_dir(run_dir: Path, config: dict, resume: bool, steps: int, xla_default: bool) -> int:
    """The step a run starts from, after checking ``run_dir``; completes ``config`` (``xla``:
    default the resumed run's, else ``xla_default``; ``changes``).

    - A new run (``resume`` False): a run already in ``run_dir`` is moved aside
      (:func:`move_aside`); a folder that holds other files is refused (nothing is moved).
    - ``resume``: the step of the newest checkpoint, if the stored configuration allows it (a note
      says which training-only settings changed); step 0 in place for a run that stopped before
      its first checkpoint; refused for a folder that holds no run, or a stale one.
    """
    from ddpm_helpers.engine.checkpoints import latest_checkpoint

    found = None
    if resume:
        if not is_run_folder(run_dir):
            listed = _unrelated_files(run_dir)
            what = f"it holds {', '.join(listed[:5])}" if listed else "it does not exist or is empty"
            raise ValueError(f"Cannot resume {run_dir}: it holds no run ({what}). Start a new run there without "
                             f"--resume, e.g. `python -m ddpm_helpers train --out {_quote(run_dir)}`.")
        problem = stale_reason(run_dir)
        if problem:
            raise ValueError(f"Cannot resume {run_dir}: {problem}. Train it afresh: "
                             f"`python -m ddpm_helpers train --out {_quote(run_dir)} --overwrite` "
                             "(the old run is moved aside, not deleted).")
        found = latest_checkpoint(run_dir)
        if found is None:
            print(f"{run_dir} holds no checkpoint yet (it stopped before its first): training it from step 0.")
    elif is_run_folder(run_dir):
        move_aside(run_dir, "a new run starts in its place")
    elif _unrelated_files(run_dir):
        listed = _unrelated_files(run_dir)
        raise ValueError(f"{run_dir} is not empty and holds no run ({', '.join(listed[:5])}"
                         f"{', ...' if len(listed) > 5 else ''}): choose a new or empty folder for --out "
                         "(nothing was moved).")
    if found is None:
        if config["xla"] is None:
            stored = stored_config(run_dir) if resume else None
            config["xla"] = stored.get("xla") if stored and stored.get("xla") is not None else xla_default
        run_dir.mkdir(parents=True, exist_ok=True)
        return 0
    stored = read_config(run_dir)
    if config["xla"] is None:
        config["xla"] = stored.get("xla")
    refused, changed = resume_differences(stored, config)
    if refused:
        raise ValueError(
            f"Cannot resume {run_dir}: it was trained with a different model, data or schedule ({', '.join(refused)}). "
            f"Resume with those settings as they were (`{resume_command(run_dir)}` takes them from its "
            f"{CONFIG_FILE}), or train afresh (without --resume) into another folder.")
    if found[0] > steps:
        raise ValueError(f"{run_dir} already holds {found[0]} steps, more than the {steps} requested: pass "
                         f"--steps {found[0]} or more.")
    config["changes"] = list(stored.get("changes", [])) + ([{"step": found[0], **changed}] if changed else [])
    note = f" with changed training settings: {describe_changes(changed)}" if changed else ""
    if "xla" in changed:
        note += " (XLA rounds differently: from here on the run matches neither setting's uninterrupted run exactly)"
    print(f"Resuming {run_dir} at step {found[0]} of {steps}{note}.")
    return found[0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def run_name(profile, *, data=None, steps=None, seed=None, num_classes=None, label_dropout=0.0,
             lr_schedule="seed", init_from=None, **_ignored) -> str:
    """The folder name of a run under the runs directory: the profile's name, plus a suffix for
    every setting that differs from the profile's defaults (so a variant never overwrites the
    book's run). E.g. ``default``, ``default-cond10-drop0.1``, ``default-steps200``,
    ``default-cond10-steps1500-from-default`` (started from the weights of the run ``default``).
    """
    from ddpm_helpers.profiles import PROFILES

    parts = [profile.name]
    registered = PROFILES.get(profile.name)
    if registered is not None and registered != profile:
        changed = [f for f in dataclasses.fields(profile) if getattr(profile, f.name) != getattr(registered, f.name)
                   and f.name not in NON_TRAINING_FIELDS]
        if changed:
            text = "-".join(f"{f.name}={getattr(profile, f.name)}" for f in changed)
            text = _slug(text.replace(" ", ""))
            parts.append(text if len(text) <= 40 else hashlib.sha256(text.encode()).hexdigest()[:10])
    if num_classes:
        parts.append(f"cond{int(num_classes)}" + (f"-drop{label_dropout:g}" if label_dropout else ""))
    if data is not None and isinstance(data, str) and data != profile.dataset:
        parts.append("data-" + _slug(data.replace("folder:", "")))
    elif data is not None and not isinstance(data, str):
        parts.append("data-custom")
    if steps is not None and int(steps) != profile.train_steps:
        parts.append(f"steps{int(steps)}")
    if seed is not None and int(seed) != profile.seed:
        parts.append(f"seed{int(seed)}")
    if lr_schedule != "seed":
        parts.append(f"lr-{lr_schedule}")
    if init_from is not None:
        parts.append("from-" + _slug(Path(init_from).name))
    return "-".join(parts)


def default_runs_dir() -> Path:
    """Where trained runs are cached: ``$DDPM_RUNS_DIR``, else ``runs`` in the working directory."""
    return Path(os.environ.get(RUNS_DIR_ENV_VAR) or "runs")


class RunBusyError(RuntimeError):
    """Another process is writing the run folder; the message names it (pid, host, since when)."""


_HELD_LOCKS: dict[str, int] = {}  # lock files this process holds, with their nesting depth


def _lock_owner(owner_file: Path) -> str:
    try:
        owner = json.loads(owner_file.read_text())
        return f"process {owner['pid']} on {owner['host']} (since {owner['since']}: {owner['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir, *, wait: bool = False, on_wait=print):
    """Hold the lock of the run folder ``run_dir`` (the file ``.NAME.lock`` beside it) while writing it.

    Every writer takes it (:func:`ddpm_helpers.engine.training.train`, hence the command line, and
    :func:`ddpm_helpers.engine.training.load_or_train`). If another process holds it, ``wait=False``
    raises :class:`RunBusyError` naming that process; ``wait=True`` calls ``on_wait`` with one
    line naming it, then waits (``load_or_train``: two chapters built at once train the shared
    model once, the second loads it). Taking it again inside the same process nests.
    """
    import datetime
    import socket

    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock_file = (run_dir.parent / f".{run_dir.name}.lock").absolute()
    key = str(lock_file)
    if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock, owner_file = FileLock(key), Path(key + ".owner")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _lock_owner(owner_file)
        if not wait:
            raise RunBusyError(f"{run_dir} is being written by {owner}. Wait until it has finished, or write "
                               "to another folder (--out).") from None
        if on_wait is not None:
            on_wait(f"Waiting: {run_dir} is being written by {owner}.")
        lock.acquire()
    try:
        command = " ".join(sys.argv) if sys.argv and sys.argv[0] else "python"
        owner_file.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": command[:200],
            "since": datetime.datetime.now().isoformat(timespec="seconds")}))
        _HELD_LOCKS[key] = 1
        yield
    finally:
        _HELD_LOCKS.pop(key, None)
        with contextlib.suppress(OSError):
            owner_file.unlink()
        lock.release()
