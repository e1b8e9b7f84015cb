"""The scan of the built pages finds what a reader must not see (booktools.sitescan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from booktools import sitescan

PAGE = """<html><body><nav>E0000 00:00:1.0 1 in_the_sidebar.cc:1] ignored</nav><article>
<h1>Sampling</h1><p>The sampler runs 50 steps.</p>
<div class="cell_output"><pre>{output}</pre></div></article></body></html>"""


def _site(tmp_path: Path, **outputs: str) -> Path:
    (tmp_path / "book").mkdir(parents=True)
    for name, output in outputs.items():
        (tmp_path / "book" / f"{name}.html").write_text(PAGE.format(output=output))
    return tmp_path


@pytest.mark.parametrize("output, what", [
    ("E0000 00:00:1796006656.055958   23248 util.cc:131] oneDNN supports DT_HALF only", "TensorFlow log line"),
    ("Traceback (most recent call last):\n  File ...", "traceback"),
    ("/usr/lib/python3/site.py:1: UserWarning: something", "Python warning"),
    ("all checks PASS", "word for the makers"),
    ("most at step np.int64(1), by 0.033", "NumPy repr"),
    ("saved to {runs}/default/ckpt-4", "path of this machine"),
    ("</pre><table><tr><td>eq-jackknife</td><td>paired se</td></tr></table><pre>",
     "equation label instead of its number"),
])
def test_each_kind_of_noise_is_found_in_the_article(tmp_path, monkeypatch, output, what):
    monkeypatch.setenv("DDPM_RUNS_DIR", str(tmp_path / "runs"))
    site = _site(tmp_path, clean="loss 0.14", noisy=output.format(runs=tmp_path / "runs"))
    found = sitescan.scan_site(site, root=tmp_path / "repo")
    assert list(found) == ["noisy.html"]
    assert what in found["noisy.html"][0]


def test_a_clean_site_passes_and_the_command_says_how_many_pages(tmp_path, capsys):
    site = _site(tmp_path, a="Spread 1.24 (0.9 to 1.5)", b="ok")
    assert sitescan.main([str(site)]) == 0
    assert "0 problems in 0 of 2 pages" in capsys.readouterr().out
    noisy = _site(tmp_path / "n", a="Traceback (most recent call last):")
    assert sitescan.main([str(noisy)]) == 1


def test_an_unbuilt_site_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the book first"):
        sitescan.scan_site(tmp_path)
