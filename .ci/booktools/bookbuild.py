"""Executing the book's chapters in parallel before Sphinx renders them (``make book``).

Jupyter Book executes pages one after another. The chapters of this book are independent
notebooks (they share only the trained models cached in ``$DDPM_RUNS_DIR``, guarded by a lock),
so ``make book`` executes them first in a pool of processes, one kernel per chapter, and stores
each executed notebook in the jupyter-cache that Jupyter Book reads in ``cache`` mode
(``_build/.jupyter_cache``). The build then renders every page from that cache; a page the pool
could not store is executed by Jupyter Book itself, as before.

The model the later chapters share is trained first, in the pool. While it trains, the other
process executes the chapters that do not use it (longest first), then "Your turn", whose 2-D
exercises come before the parts that need the model; the chapters that load the model come last,
so that no process sits waiting for it. Each process gets its share of the cores
(:func:`share_cores`): two TensorFlow processes that each spread over every core of a 2-core
machine train about 20% slower than two that use one core each.

    python -m booktools.bookbuild --jobs 2 --cache _build/.jupyter_cache
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

PRETRAIN = "(train the shared model)"
# First the pages that do not load the shared model, longest first (as measured on the 2-core
# machine: about 170 s in all, while the model trains for about 160 s), then "Your turn" (about
# 80 s of 2-D exercises before it needs the model), then the pages that load the model: "Sampling"
# first (it draws the samples that later pages read from the run folder), then "Guidance" (the
# longest, about 110 s), so that shorter pages fill the end of the build ("Scores, hard steps and
# the loss" measures the model on the digits; the last two train more models first). Pages not
# listed run last.
ORDER = ("04_diffusion_2d", "11_scaling_up", "02_forward_reverse", "03b_ddpm_on_one_screen",
         "05_unet", "12_engineering", "01_background", "03_noise_schedules", "10_performance",
         "09_your_turn", "07_sampling", "13_guidance", "06_training", "08_evaluation",
         "02b_score_view", "14_targets_flows", "15_solvers", "index")


def toc_pages(root: Path) -> list[Path]:
    """Every page of ``_toc.yml`` that is a jupytext notebook, as ``book/NAME.md`` paths."""
    import yaml

    from booktools import chapters

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part.get("chapters", [])]
    notebooks = set(chapters(root))
    return [root / f"{name}.md" for name in files if root / f"{name}.md" in notebooks]


def share_cores(jobs: int, environ=os.environ) -> int:
    """Limit TensorFlow in each of ``jobs`` processes to its share of the cores; return it.

    Sets ``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS`` (read by TensorFlow when it
    starts, and inherited by the kernels) unless they are set already.
    """
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        environ.setdefault(name, str(threads))
    return threads


def read_page(md: Path):
    """The notebook of a MyST page, read the way myst-nb reads it (so cache keys match)."""
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    return read_myst_markdown_notebook(md.read_text(), MdParserConfig(), path=md)


def _pretrain() -> float:
    """Train (or load) the active profile's model, which most chapters use."""
    from ddpm_helpers import get_profile
    from ddpm_helpers.engine.training import load_or_train

    began = time.perf_counter()
    load_or_train(get_profile())
    return time.perf_counter() - began


def _execute(md: str, cache_dir: str, timeout: int) -> tuple[str, float, str | None]:
    """Execute one page in its folder and store it in the cache; return (page, s, error)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.executors.utils import single_nb_execution

    if md == PRETRAIN:
        return md, _pretrain(), None
    path = Path(md)
    notebook = read_page(path)
    result = single_nb_execution(notebook, cwd=str(path.parent), timeout=timeout,
                                 allow_errors=False, meta_override=True)
    if result.err is not None:
        return md, result.time, result.exc_string or repr(result.err)
    get_cache(cache_dir).cache_notebook_bundle(
        CacheBundleIn(notebook, str(path), data={"execution_seconds": result.time}),
        check_validity=False, overwrite=True)
    return md, result.time, None


def execute_book(root: Path, cache_dir: Path, jobs: int = 2, timeout: int = 1800,
                 pretrain: bool = True) -> dict[str, float]:
    """Execute every page of the book in ``jobs`` processes into ``cache_dir``.

    Raises ``RuntimeError`` naming each page that failed, with its traceback.
    """
    pages = toc_pages(root)
    rank = {name: index for index, name in enumerate(ORDER)}
    pages.sort(key=lambda md: rank.get(md.stem, len(ORDER)))
    tasks = ([PRETRAIN] if pretrain else []) + [str(md) for md in pages]
    cache_dir.mkdir(parents=True, exist_ok=True)
    seconds, failures = {}, []
    began = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=share_cores,
                                                initargs=(jobs,)) as pool:
        futures = [pool.submit(_execute, task, str(cache_dir), timeout) for task in tasks]
        for future in concurrent.futures.as_completed(futures):
            page, took, error = future.result()
            name = page if page == PRETRAIN else Path(page).relative_to(root).as_posix()
            seconds[name] = round(took, 1)
            status = "failed" if error else "done"
            print(f"[{time.perf_counter() - began:5.0f} s] {status}: {name} ({took:.0f} s)",
                  flush=True)
            if error:
                failures.append(f"{name}:\n{error}")
    if failures:
        raise RuntimeError("These pages failed to execute:\n\n" + "\n\n".join(failures))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools.bookbuild",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the book's top folder")
    parser.add_argument("--cache", type=Path, default=Path("_build/.jupyter_cache"),
                        help="the jupyter-cache folder Jupyter Book reads")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="pages executed at once (default: the number of cores)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--no-pretrain", action="store_true",
                        help="do not train the shared model before the chapters")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        seconds = execute_book(args.root.resolve(), args.cache.resolve(), args.jobs,
                               args.timeout, pretrain=not args.no_pretrain)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"executed {len(seconds)} tasks in {time.perf_counter() - began:.0f} s "
          f"with {args.jobs} processes: {json.dumps(seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
