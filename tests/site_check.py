"""Open every page of the built site in headless Chromium and check what a reader would see.

    python tests/site_check.py [HTML_DIR] [--out _build/site-check]    (run by `make site-check`)

Serves HTML_DIR (default ``_build/html``, the output of ``make book``) on a free localhost port
for the lifetime of the check, opens every page with Debian's ``chromium`` through
``chromium-driver`` and selenium, and fails when

- a page does not load, or any file it asks the local server for (CSS, scripts, images, fonts)
  is missing;
- an ``<img>`` on it has not loaded (``naturalWidth == 0``);
- a link on it points inside the site at a file that does not exist, or at an ``#anchor`` that
  is not on the target page;
- it has math and loads MathJax from the build, but the math was not typeset;
- at any width of ``--widths`` (default 1024 and 1280 px, laptop screens) a display equation,
  a code or output block (a ``<pre>``, folded cells opened) or a table is wider than its box,
  so that the reader would need a horizontal scrollbar: each one is named, and the counts
  (overflowing of all, per width and per page) are printed and written to ``report.json``.

A full-page screenshot of every page goes to ``OUT/<page>.png`` and a summary to
``OUT/report.json``. Requests to other hosts (the MathJax CDN, for one) and the math they leave
untypeset are listed, not failed: the check runs offline. Not part of ``make test``: run it after ``make book``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

# Flags for a quiet, offline, throw-away browser (a fresh --user-data-dir is added per run).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--hide-scrollbars",
]
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
MAX_SCREENSHOT_HEIGHT = 8000  # px; longer pages are cut there
WIDTHS = (1024, 1280)  # px: the window widths at which nothing may scroll sideways


def pages(root: Path) -> list[Path]:
    """Every HTML page of the site (not the theme's templates under _static)."""
    return sorted(p for p in root.rglob("*.html")
                  if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """The ids (and a[name]s) a page defines: where #fragment links can land."""
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


def target_file(root: Path, url_path: str) -> Path:
    """The file the local server would answer for a URL path (a folder means its index.html)."""
    path = root / unquote(url_path).lstrip("/")
    return path / "index.html" if path.is_dir() else path


class Server:
    """http.server on 127.0.0.1 and a free port, in a thread; records every request's status."""

    def __init__(self, root: Path):
        self.requests: list[tuple[str, int]] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                requests.append((self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, *args):  # keep the terminal quiet
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def browser(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    return driver


IMAGES_JS = """
return Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}));
"""
MATH_JS = """
return {elements: document.querySelectorAll('.math').length,
        typeset: document.querySelectorAll('mjx-container').length,
        scripts: Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s))};
"""
LINKS_JS = """
return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
"""
# Resolves when MathJax has typeset the page and every web font (MathJax's included) is loaded,
# so that widths are final. Returns at once on a page without MathJax.
SETTLED_JS = """
const done = arguments[arguments.length - 1];
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
typeset.then(() => document.fonts.ready).then(() => done(true), () => done(false));
"""
# Display equations, code/output blocks and tables that are wider than their box: what would
# need a horizontal scrollbar. Folded cells (<details>) are opened first: a reader may open them.
OVERFLOW_JS = """
document.querySelectorAll('details').forEach(d => { d.open = true; });
const root = document.querySelector('main article') || document.querySelector('article') || document.body;
const shown = el => el.getClientRects().length > 0;
const excess = el => el.scrollWidth - el.clientWidth;
const name = (el, index) => {
    const holder = el.closest('[id]');
    return (holder && holder !== root ? '#' + holder.id : '') + ' (' + (index + 1) + ')';
};
const equations = Array.from(root.querySelectorAll('mjx-container[display="true"]')).filter(shown);
const blocks = Array.from(root.querySelectorAll('pre')).filter(shown);
const tables = Array.from(root.querySelectorAll('table')).filter(shown);
const over = (list, describe) => list.map((el, i) => {
    // an equation scrolls in its div.math, a table in the theme's scrollable wrapper (or its
    // parent), a <pre> in itself
    const box = el.matches('table')
        ? (el.closest('.pst-scrollable-table-container') || el.parentElement)
        : (el.parentElement && el.parentElement.matches('div.math') ? el.parentElement : el);
    const px = Math.max(excess(el), excess(box));
    return px > 1 ? {where: name(el, i), px: px, what: describe(el)} : null;
}).filter(x => x);
const text = el => (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 60);
return {
    equations: equations.length,
    blocks: blocks.length,
    equation_overflows: over(equations, el => {
        const eqno = el.parentElement && el.parentElement.querySelector('.eqno');
        return eqno ? 'equation ' + eqno.textContent.replace('#', '').trim() : 'unnumbered equation';
    }),
    block_overflows: over(blocks, el => text(el)),
    tables: tables.length,
    table_overflows: over(tables, el => text(el)),
    page_px: document.documentElement.scrollWidth - window.innerWidth,
};
"""


def wait_for(driver, condition, timeout=10.0, step=0.1):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


def measure_widths(driver, widths=WIDTHS) -> tuple[dict, list[str]]:
    """At each window width: how many display equations and code/output blocks the page has
    and which of them overflow. Returns ``({width: counts}, problems)``."""
    found, problems = {}, []
    for width in widths:
        driver.set_window_size(width, 900)
        driver.execute_async_script(SETTLED_JS)
        time.sleep(0.2)  # the layout after the resize
        m = driver.execute_script(OVERFLOW_JS)
        found[str(width)] = {
            "equations": m["equations"], "equations_overflowing": len(m["equation_overflows"]),
            "blocks": m["blocks"], "blocks_overflowing": len(m["block_overflows"]),
            "tables": m["tables"], "tables_overflowing": len(m["table_overflows"]),
            "overflows": m["equation_overflows"] + m["block_overflows"] + m["table_overflows"]}
        for item in m["equation_overflows"]:
            problems.append(f"{width} px: display {item['what']} at {item['where']} is "
                            f"{item['px']} px too wide")
        for item in m["block_overflows"]:
            problems.append(f"{width} px: code/output block at {item['where']} is {item['px']} px "
                            f"too wide: {item['what']!r}")
        for item in m["table_overflows"]:
            problems.append(f"{width} px: table at {item['where']} is {item['px']} px too wide: "
                            f"{item['what']!r}")
        if m["page_px"] > 1:
            problems.append(f"{width} px: the page itself scrolls sideways by {m['page_px']} px")
    driver.set_window_size(1280, 900)
    return found, problems


def check_page(driver, server: Server, root: Path, page: Path, out: Path,
               widths=WIDTHS) -> dict:
    rel = page.relative_to(root).as_posix()
    url = f"{server.base}/{rel}"
    first_request = len(server.requests)
    problems: list[str] = []
    driver.get(url)
    wait_for(driver, lambda: driver.execute_script("return document.readyState") == "complete")
    # Sphinx's top-level index.html is a meta refresh to the root page: follow it.
    redirected = 'http-equiv="refresh"' in page.read_text(errors="replace")[:4000].lower()
    if driver.current_url != url:
        wait_for(driver, lambda: driver.execute_script("return document.readyState") == "complete")
    title = driver.title

    # Images: scroll each unloaded one into view (lazy loading) and give it a moment.
    images = driver.execute_script(IMAGES_JS)
    if any(not img["complete"] or img["width"] == 0 for img in images):
        driver.execute_script("Array.from(document.images).forEach(i => i.scrollIntoView())")
        wait_for(driver, lambda: all(i["complete"] for i in driver.execute_script(IMAGES_JS)), 5)
        images = driver.execute_script(IMAGES_JS)
    for img in images:
        if img["width"] == 0:
            problems.append(f"image did not load: {img['src']}")

    # Internal links: the target file exists, and so does the #anchor on it.
    links = driver.execute_script(LINKS_JS)
    internal = 0
    for href in links:
        address, fragment = urldefrag(href)
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != server.base:
            continue
        internal += 1
        target = target_file(root, parts.path)
        if not target.is_file():
            problems.append(f"broken link: {href} (no {target.relative_to(root)})")
        elif fragment and target.suffix == ".html" and unquote(fragment) not in anchors(target):
            problems.append(f"broken anchor: {href} (no id {fragment!r} in {target.relative_to(root)})")

    # Everything the page asked the local server for (CSS, JS, fonts, images) was there.
    for path, code in server.requests[first_request:]:
        if code >= 400 and path != "/favicon.ico":  # asked for by the browser, not the page
            problems.append(f"HTTP {code} for {path}")

    # Requests to other hosts fail offline (e.g. MathJax from its CDN): list them, don't fail.
    external = sorted({entry["message"].split(" ")[0] for entry in driver.get_log("browser")
                       if entry["level"] == "SEVERE" and server.base not in entry["message"]})

    # Math: typeset by MathJax. Served from the build, it must work; from a CDN, only noted.
    math = driver.execute_script(MATH_JS)
    if math["elements"]:
        local = any(src.startswith(server.base) for src in math["scripts"])
        if local:
            wait_for(driver, lambda: driver.execute_script(MATH_JS)["typeset"], 15)
            math = driver.execute_script(MATH_JS)
        if not math["typeset"]:
            message = f"{math['elements']} math element(s) not typeset (MathJax: {math['scripts']})"
            (problems if local else external).append(message)

    # Widths are measured on real pages only, not on a redirect (the site's top index.html).
    widths_found, width_problems = ({}, []) if redirected else measure_widths(driver, widths)
    problems += width_problems

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(int(height), MAX_SCREENSHOT_HEIGHT)))
    shot = out / (rel.replace("/", "__").removesuffix(".html") + ".png")
    driver.save_screenshot(str(shot))
    driver.set_window_size(1280, 900)
    return {"page": rel, "title": title, "images": len(images), "internal_links": internal,
            "external_errors": external, "screenshot": str(shot), "widths": widths_found,
            "problems": problems}


def overflow_summary(results: list[dict]) -> dict:
    """Per width: display equations, code/output blocks and tables, overflowing and in all, and
    the pages where any overflows."""
    summary: dict = {}
    for result in results:
        for width, counts in result.get("widths", {}).items():
            kinds = ("equations", "blocks", "tables")
            total = summary.setdefault(width, {**{k: 0 for k in kinds},
                                               **{f"{k}_overflowing": 0 for k in kinds},
                                               "pages": {}})
            for kind in kinds:
                total[kind] += counts[kind]
                total[f"{kind}_overflowing"] += counts[f"{kind}_overflowing"]
            if any(counts[f"{kind}_overflowing"] for kind in kinds):
                total["pages"][result["page"]] = {
                    kind: f"{counts[f'{kind}_overflowing']} of {counts[kind]}" for kind in kinds}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, nargs="?", default=Path("_build/html"),
                        help="the built site (default: _build/html)")
    parser.add_argument("--out", type=Path, default=Path("_build/site-check"),
                        help="where screenshots and report.json go")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds before the whole check is stopped (default 900)")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)),
                        help="window widths in px at which nothing may scroll sideways "
                             "(default %(default)s)")
    args = parser.parse_args(argv)

    root = args.html.resolve()
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    if not (root / "index.html").is_file():
        print(f"site-check: no {root / 'index.html'}; build the site first (make book)",
              file=sys.stderr)
        return 2
    # A bounded lifetime: the server and browser never outlive the check.
    previous = signal.signal(signal.SIGALRM,
                             lambda *_: sys.exit(f"site-check: gave up after {args.timeout} s"))
    signal.alarm(args.timeout)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium: never phone home
    user_data = tempfile.mkdtemp(prefix="site-check-chromium-")
    results = []
    started = time.monotonic()
    try:
        with Server(root) as server:
            driver = browser(user_data)
            try:
                for page in pages(root):
                    result = check_page(driver, server, root, page, args.out, widths)
                    results.append(result)
                    status = "ok" if not result["problems"] else f"{len(result['problems'])} problem(s)"
                    print(f"  {result['page']}: {status} ({result['images']} images, "
                          f"{result['internal_links']} internal links)")
                    for problem in result["problems"]:
                        print(f"    {problem}")
            finally:
                driver.quit()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(user_data, ignore_errors=True)

    problems = sum(len(r["problems"]) for r in results)
    external = sorted({e for r in results for e in r["external_errors"]})
    summary = overflow_summary(results)
    (args.out / "report.json").write_text(json.dumps(
        {"html": str(root), "pages": results, "external_errors": external,
         "overflow": summary}, indent=2))
    for width, total in summary.items():
        print(f"site-check: at {width} px, {total['equations_overflowing']} of "
              f"{total['equations']} display equations, {total['blocks_overflowing']} of "
              f"{total['blocks']} code/output blocks and {total['tables_overflowing']} of "
              f"{total['tables']} tables overflow"
              + "".join(f"\n    {page}: equations {c['equations']}, code/output blocks "
                        f"{c['blocks']}, tables {c['tables']}"
                        for page, c in total["pages"].items()))
    for note in external:
        print(f"site-check: note (other hosts are not reachable offline): {note}")
    print(f"site-check: {len(results)} pages, {sum(r['images'] for r in results)} images, "
          f"{sum(r['internal_links'] for r in results)} internal links, {problems} problem(s) "
          f"in {time.monotonic() - started:.0f} s; screenshots in {args.out}")
    return 1 if problems or not results else 0


if __name__ == "__main__":
    sys.exit(main())
