"""Wall time of the book: each chapter executed on its own, and ``make book`` / ``make test`` as whole commands.

    python benchmarks/bench_book.py [--profile default] [--chapters 07_sampling,08_evaluation]
                                    [--runs-dir runs] [--skip-chapters] [--skip-make-book] [--skip-make-test]

Every chapter of ``_toc.yml`` that has a notebook (or those named by ``--chapters``) is run top to
bottom with nbclient in a fresh kernel, from ``book/`` as ``jupyter-book`` does, with
``DDPM_PROFILE`` set to ``--profile`` and ``DDPM_RUNS_DIR`` to ``--runs-dir`` (default: the
repository's ``runs/``, so a model trained before is reused, as in ``make book``). A chapter's time
includes starting the kernel and importing TensorFlow. Whether a chapter trained a model or
loaded a cached one is recorded: the checkpoint files (``ckpt-*.index``) under the runs directory
are listed before and after each chapter, and a chapter that wrote new ones trained. Point
``--runs-dir`` at an empty folder to time the book with no cached training.

Then, unless skipped, ``make book`` and ``make test`` are timed as whole commands, each in a fresh
clone of the repository's HEAD (the venv created, every model trained: what a reader who clones
the book waits for). These take long: skip them with ``--skip-make-book`` /
``--skip-make-test`` while trying the script out.

Writes ``benchmarks/results/book-<date>.json`` (see ``benchcommon.py``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchcommon

ROOT = benchcommon.ROOT
BOOK = ROOT / "book"


def toc_chapters() -> list[str]:
    """The pages of ``_toc.yml`` (root first), as names such as ``07_sampling``."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters") or entry.get("sections"))
            for part in entry.get("parts", []) if isinstance(entry, dict) else []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [Path(f).name for f in files]


def checkpoints(runs_dir: Path) -> dict[str, float]:
    """Every checkpoint (``ckpt-<step>.index``, see ``ddpm_helpers.engine.checkpoints``) under ``runs_dir``
    with its modification time."""
    if not runs_dir.exists():
        return {}
    return {str(p.relative_to(runs_dir)): p.stat().st_mtime for p in runs_dir.rglob("ckpt-*.index")}


def _seconds(start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def slowest_cells(notebook, count: int = 3) -> list[dict]:
    """The ``count`` slowest code cells (nbclient's timing metadata), with their first line."""
    cells = []
    for index, cell in enumerate(notebook.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
            continue
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
        cells.append({"cell": index, "seconds": round(_seconds(timing["iopub.execute_input"],
                                                               timing["shell.execute_reply"]), 2),
                      "first_line": (lines[0] if lines else "")[:100]})
    return sorted(cells, key=lambda c: -c["seconds"])[:count]


def training_messages(notebook) -> list[str]:
    """Lines printed by ``load_or_train`` ("Loaded ..." / "Training: ...")."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            found += [line.strip() for line in text.splitlines()
                      if line.startswith("Loaded ") or line.startswith("Training: ")]
    return found


def run_chapter(name: str, env: dict, runs_dir: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    path = BOOK / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    before = checkpoints(runs_dir)
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment of this process
    error = None
    began = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(BOOK)}}).execute()
    except Exception as exc:  # noqa: BLE001 - reported, and the other chapters still run
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    finally:
        seconds = time.perf_counter() - began
        os.environ.clear()
        os.environ.update(saved)
    after = checkpoints(runs_dir)
    written = sorted(p for p, mtime in after.items() if before.get(p) != mtime)
    trained_runs = sorted({str(Path(p).parent) for p in written})
    messages = training_messages(notebook)
    training = "trained" if written else "cached" if any(m.startswith("Loaded ") for m in messages) else "none"
    return {"seconds": round(seconds, 2), "ok": error is None, "error": error, "training": training,
            "trained": bool(written), "trained_runs": trained_runs,
            "training_messages": messages, "slowest_cells": slowest_cells(notebook)}


def run_make(target: str, env: dict) -> dict:
    """Time ``make target`` in a fresh clone of the repository's HEAD: venv, training and all.

    This is what a reader who clones the book waits for (and what CI runs for ``make test``);
    the clone is deleted afterwards.
    """
    env = {k: v for k, v in {**os.environ, **env}.items()
           if k not in ("DDPM_RUNS_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory(prefix=f"bench-make-{target}-") as folder:
        clone = Path(folder) / "book"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        began = time.perf_counter()
        completed = subprocess.run(["make", target], cwd=clone, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - began
    tail = completed.stdout.strip().splitlines()[-5:]
    return {"command": f"make {target}", "where": "a fresh clone of HEAD (venv included)",
            "seconds": round(seconds, 2), "returncode": completed.returncode,
            "ok": completed.returncode == 0, "output_tail": tail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="DDPM_PROFILE for the chapters and make book")
    parser.add_argument("--chapters", default="", help="comma-separated names (default: every page of _toc.yml)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"), help="DDPM_RUNS_DIR (default: the repo's runs/)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("--skip-chapters", action="store_true", help="do not time the chapters one by one")
    parser.add_argument("--skip-make-book", action="store_true", help="do not time `make book`")
    parser.add_argument("--skip-make-test", action="store_true", help="do not time `make test`")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/book-<date>.json)")
    args = parser.parse_args(argv)
    record = benchcommon.Record("book", "book: wall time of each chapter, make book and make test")

    runs_dir = Path(args.runs_dir).resolve()
    env = {"DDPM_PROFILE": args.profile, "DDPM_RUNS_DIR": str(runs_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONHASHSEED": "0"}
    names = [c.strip() for c in args.chapters.split(",") if c.strip()] or toc_chapters()
    missing = [n for n in names if not (BOOK / f"{n}.ipynb").exists() and n != "status"]
    if args.chapters and missing:
        parser.error(f"no notebook book/<name>.ipynb for {missing}")
    names = [n for n in names if (BOOK / f"{n}.ipynb").exists()]
    cached_before = sorted({str(Path(p).parent) for p in checkpoints(runs_dir)})
    print(f"profile {args.profile}, runs in {runs_dir} (runs with checkpoints: {', '.join(cached_before) or 'none'})")

    chapters = {}
    if not args.skip_chapters:
        for name in names:
            chapters[name] = result = run_chapter(name, env, runs_dir, args.timeout)
            state = {"trained": "trained " + ", ".join(result["trained_runs"]), "cached": "loaded a cached run",
                     "none": "no trained model used"}[result["training"]]
            print(f"{name:>24}: {result['seconds']:7.1f} s  {'ok' if result['ok'] else 'FAILED ' + result['error']}"
                  f"  [{state}]", flush=True)
    commands = {}
    for target, skip in (("book", args.skip_make_book), ("test", args.skip_make_test)):
        if skip:
            continue
        commands[target] = result = run_make(target, {"DDPM_PROFILE": args.profile} if target == "book" else {})
        print(f"{'make ' + target:>24}: {result['seconds']:7.1f} s  {'ok' if result['ok'] else 'FAILED'}", flush=True)

    total = sum(c["seconds"] for c in chapters.values())
    record.write(args.out, profile=args.profile, runs_dir=str(runs_dir), runs_with_checkpoints_before=cached_before,
                 chapters=chapters, chapters_total_seconds=round(total, 2),
                 any_chapter_trained=any(c["trained"] for c in chapters.values()), make=commands)
    failed = [n for n, c in chapters.items() if not c["ok"]] + [f"make {t}" for t, c in commands.items() if not c["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
