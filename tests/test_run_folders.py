"""Run folders used the way people type them: the README's command sequence with relative paths
from another working directory, Ctrl-C and SIGTERM in the middle of a run, two writers of one
folder, ``--resume`` on folders that hold no run, and the command line's checks of its numbers.

Each defect these tests name was seen in a real session: a relative ``--out`` hid every
checkpoint (so ``sample`` found none and ``--resume`` started over), Ctrl-C lost up to
``checkpoint_every`` steps, two trainings into one folder corrupted it, ``--resume`` moved an
unrelated folder aside.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.engine import runs, training
from ddpm_helpers.cli import build_parser, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                    attention_resolutions=(), attention_in_bottleneck=False, time_embedding_dim=16)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "DDPM_PROFILE": "default"}


def test_a_relative_run_folder_lists_its_checkpoints_and_load_or_train_loads_it(tmp_path, monkeypatch, capsys):
    """Colab's case: no $DDPM_RUNS_DIR, so runs live in ./runs; the second call must load, not retrain."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(runs.RUNS_DIR_ENV_VAR, raising=False)
    first = training.load_or_train(TINY, steps=4, checkpoint_every=2, progress=False)
    assert first.run_dir.parent == Path("runs") and not first.run_dir.is_absolute()
    assert [s for s, _ in training.list_checkpoints(first.run_dir)] == [2, 4]
    capsys.readouterr()
    second = training.load_or_train(TINY, steps=4, checkpoint_every=2, progress=False)
    said = capsys.readouterr().out
    assert said.startswith("Loaded ") and "Training" not in said, said
    assert second.loaded and second.step == 4
    assert not list(Path("runs").glob("*.stale-*"))  # nothing moved aside


def test_readme_sequence_with_relative_paths_from_another_directory(tmp_path, monkeypatch, capsys):
    """train -> sample -> resume (no --profile, --data or --seed: the run's own) -> sample, in a
    folder with a space, from a working directory that is not the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DDPM_PROFILE", "default")  # a resumed run must not fall back to this
    out = "runs/my run"
    assert main(["train", "--profile", "smoke", "--data", "digits", "--out", out, "--steps", "4",
                 "--checkpoint-every", "2", "--seed", "5", "--no-xla"]) == 0
    assert main(["sample", "--run", out, "--n", "3", "--batch-size", "2", "--out", "first.npz"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", out, "--steps", "6", "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"Resuming {out} at step 4 of 6" in said, said
    config = json.loads((tmp_path / out / "config.json").read_text())
    assert config["profile"]["name"] == "smoke" and config["seed"] == 5
    assert config["changes"] == [{"step": 4, "steps": [4, 6]}]  # the seed and the rest are the run's own
    assert config["data"] == "digits"
    assert [s for s, _ in training.list_checkpoints(out)] == [4, 6]
    assert main(["sample", "--run", out, "--n", "3", "--out", "second.npz"]) == 0
    with np.load(tmp_path / "second.npz") as stored:
        assert stored["images"].shape == (3, 8, 8, 1) and json.loads(str(stored["meta"]))["step"] == 6


def test_resume_refuses_a_folder_without_a_run_and_moves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("thesis").mkdir()
    Path("thesis/thesis.txt").write_text("three years of work")
    assert main(["train", "--profile", "smoke", "--out", "thesis", "--steps", "2", "--resume"]) == 1
    error = capsys.readouterr().err
    assert "holds no run" in error and "thesis.txt" in error
    # a new run into it is refused too: it is not empty and not a run
    assert main(["train", "--profile", "smoke", "--out", "thesis", "--steps", "2"]) == 1
    assert "not empty and holds no run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thesis.lock", "thesis"]  # the lock: see runs.run_lock
    assert Path("thesis/thesis.txt").read_text() == "three years of work"
    with pytest.raises(ValueError, match="holds no run"):
        runs.move_aside(Path("thesis"), "test")


def test_resume_of_a_run_that_stopped_before_its_first_checkpoint_trains_in_place(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--profile", "smoke", "--out", "r", "--steps", "2", "--no-xla"]) == 0
    for path in Path("r").iterdir():  # as if it had stopped before step 2's checkpoint
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name != "config.json":
            path.unlink()
    capsys.readouterr()
    assert main(["sample", "--run", "r", "--n", "2", "--out", "s.npz"]) == 1
    advice = capsys.readouterr().err
    assert "python -m ddpm_helpers train --out r --resume" in advice
    assert main(["train", "--out", "r", "--resume"]) == 0  # the advice, as printed, works
    assert [s for s, _ in training.list_checkpoints("r")] == [2]
    assert not list(tmp_path.glob("r.stale-*"))


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint-every", "0"], "checkpoint_every (--checkpoint-every) must be at least 1, got 0"),
    (["--checkpoint-every", "-3"], "must be at least 1, got -3"),
    (["--keep-checkpoints", "0"], "keep_checkpoints (--keep-checkpoints) must be at least 1, got 0"),
    (["--keep-checkpoints", "-1"], "must be at least 1, got -1"),
    (["--num-classes", "0"], "must be at least 2 for a conditional model, got 0"),
    (["--steps", "0"], "steps (--steps) must be at least 1, got 0"),
])
def test_bad_numbers_are_refused_before_a_run_folder_is_written(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--profile", "smoke", "--out", "r"] + flags) == 1
    assert message in capsys.readouterr().err
    assert not Path("r").exists()


def test_out_pointing_at_a_file_and_samples_pointing_at_a_folder_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("x")
    assert main(["train", "--profile", "smoke", "--out", "notes.txt", "--steps", "2"]) == 1
    assert "is a file, not a run folder" in capsys.readouterr().err
    Path("samples").mkdir()
    assert main(["evaluate", "--samples", "samples"]) == 1  # a folder of samples needs a reference
    error = capsys.readouterr().err
    assert "--reference folder:PATH" in error and "does not exist" not in error


def test_help_is_plain_text_and_sample_has_a_batch_size():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for text in [parser.format_help()] + [command.format_help() for command in commands.values()]:
        assert "``" not in text and ":func:" not in text
    args = parser.parse_args(["sample", "--run", "r", "--out", "s.npz"])
    assert args.batch_size is None


def _hold_lock_in_another_process(folder: Path, seconds: float):
    code = ("import sys, time\nfrom ddpm_helpers.engine.runs import run_lock\n"
            f"with run_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep({seconds})\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=folder.parent, env=_env(), stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_first_and_load_or_train_waits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    holder = _hold_lock_in_another_process(tmp_path / "r", 3.0)
    try:
        assert main(["train", "--profile", "smoke", "--out", "r", "--steps", "2"]) == 1
        error = capsys.readouterr().err
        assert f"r is being written by process {holder.pid} on " in error, error
        assert not Path("r").exists()
        said = []
        began = time.monotonic()
        with runs.run_lock("r", wait=True, on_wait=said.append):
            waited = time.monotonic() - began
        assert len(said) == 1 and f"process {holder.pid}" in said[0] and waited > 0.5
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_saves_the_current_step_and_its_command_resumes_to_the_uninterrupted_losses(
        tmp_path, monkeypatch):
    """A real run in its own process, stopped by Ctrl-C (SIGINT) far from any scheduled checkpoint:
    it saves the step it reached, prints the command that continues it without a traceback, and
    that command ends with the losses and weights of a run that was never interrupted."""
    flags = ["--profile", "smoke", "--seed", "3", "--no-xla", "--checkpoint-every", "100000"]
    run = subprocess.Popen([sys.executable, "-m", "ddpm_helpers", "train", "--out", "runs/r", "--steps", "100000",
                            *flags], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    while not (tmp_path / "runs/r/config.json").exists():
        assert run.poll() is None, run.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 130, out + err
    assert "Traceback" not in err, err
    saved = training.list_checkpoints(tmp_path / "runs/r")
    assert len(saved) == 1 and 1 <= saved[0][0] < 100000
    total = saved[0][0] + 3
    command = err.strip().splitlines()[-1].split("Continue with: ", 1)[1].split(" (in Python", 1)[0]
    assert command == "python -m ddpm_helpers train --out runs/r --resume"
    resumed = subprocess.run([sys.executable] + command.split()[1:] + ["--steps", str(total)], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "straight", "--steps", str(total), *flags]) == 0
    a, b = training.load_run("runs/r"), training.load_run("straight")
    assert a.history["step"] == b.history["step"] == list(range(1, total + 1))
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    for x, y in zip(a.ema_model.get_weights(), b.ema_model.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_sigterm_saves_the_step_it_arrives_in(tmp_path):
    """SIGTERM (job schedulers, docker stop): here sent by the run to itself after step 3, so that it
    arrives during step 4, which is then finished and saved."""
    def stop_at_3(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(training.TrainingInterrupted) as stopped:
        training.train(TINY, tmp_path / "r", steps=50, checkpoint_every=100, progress=False, on_step=stop_at_3)
    assert stopped.value.exit_status == 128 + signal.SIGTERM and stopped.value.step == 4
    assert "Stopped by SIGTERM at step 4 of 50" in str(stopped.value)
    assert [s for s, _ in training.list_checkpoints(tmp_path / "r")] == [4]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run


def test_a_warm_up_ramps_the_rate_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--profile", "smoke", "--out", "w", "--steps", "4", "--checkpoint-every", "2",
                 "--warmup-steps", "4", "--lr-schedule", "constant", "--no-xla"]) == 0
    # --batch-size on a resume applies to the run's own profile (smoke), not $DDPM_PROFILE's
    same_batch = str(get_profile("smoke").batch_size)
    assert main(["train", "--out", "w", "--steps", "6", "--resume", "--batch-size", same_batch]) == 0
    run = training.load_run("w")
    base = get_profile("smoke").learning_rate
    # step s (from 1) used the rate of Adam's iteration s - 1: base * s / 4 during the warm-up
    np.testing.assert_allclose(run.history["lr"], [base / 4, base / 2, 3 * base / 4, base, base, base], rtol=1e-6)
    assert json.loads(Path("w/config.json").read_text())["warmup_steps"] == 4
    assert main(["train", "--profile", "smoke", "--out", "x", "--warmup-steps", "-1"]) == 1
