"""One self-contained HTML page from an evaluation (and ablation) directory.

Everything is inlined — tables as HTML, figures as base64 PNG — so the file can be mailed
or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from arpro._version import __version__
from arpro.errors import ArproError
from arpro.io.outputs import write_atomic
from arpro.plugin_api import registry
from arpro.workflows.summary import guarantee_text, paper_tables

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222} table{border-collapse:"
         "collapse;margin:1em 0;font-size:13px} th,td{border:1px solid #ccc;padding:4px 8px;text-align:right} "
         "th:first-child,td:first-child{text-align:left} th{background:#f3f3f3} figure{display:inline-block;margin:0.5em}"
         " img{max-width:100%;border:1px solid #ddd} pre{background:#f7f7f7;padding:1em;overflow:auto}")
# Marks the page once every image has decoded, so a headless browser test can check it.
SCRIPT = ("window.addEventListener('load', () => { const imgs = Array.from(document.images); document.body.dataset."
          "imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length; document.body.dataset.images = "
          "imgs.length; });")


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _versions() -> dict[str, str]:
    names = ["torch", "diffusers", "pluggy", "lightning", "anomalib", "transformers"]
    names += sorted({e.distribution for e in registry.registry()} - {"arpro"})
    found = {"arpro": __version__}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def html_tables(summary: dict) -> list[str]:
    """:func:`arpro.workflows.summary.paper_tables` as HTML tables."""
    tables = []
    for head, rows in paper_tables(summary):
        cells = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
        cells += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        tables.append("<table>" + "".join(cells) + "</table>")
    return tables


def _own_images(pattern: str, folder: Path) -> list[Path]:
    """``folder``'s images matching ``pattern``, without any that link out of it (never embedded)."""
    root, found = folder.resolve(), []
    for path in sorted(folder.glob(pattern)):
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            print(f"warning: {path} links outside {folder}; not embedded", file=sys.stderr)
        else:
            found.append(path)
    return found


def write_report(results: Path, out: Path, ablation_dir: Path | None = None, overwrite: bool = False) -> Path:
    """Write the HTML page for ``results`` to ``out`` (atomically) and return its path."""
    results = Path(results)
    if not results.is_dir():
        raise ArproError(f"{results} is not a directory")
    if ablation_dir is not None and not (Path(ablation_dir) / "ablation.json").is_file():
        raise ArproError(f"--ablation {ablation_dir} is not a folder written by arpro ablate (no ablation.json)")
    if Path(out).exists() and not overwrite:
        raise ArproError(f"{out} already exists; pass --overwrite to replace it")
    summary_path = results / "summary.json"
    ablation_dir = ablation_dir or results
    plots = _own_images("ablation_*.png", ablation_dir)
    if not summary_path.exists() and not plots:
        raise ArproError(f"{results} holds neither an evaluation (summary.json) nor ablation plots")
    parts = [f"<h1>arpro report: {html.escape(results.name)}</h1>"]
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
            if isinstance(summary, dict) and "properties" not in summary:
                raise ArproError(f"{summary_path} was written by an older arpro; rerun `arpro evaluate` on it")
            metrics, verdicts = html_tables(summary)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise ArproError(f"{summary_path} is malformed (not a summary arpro evaluate wrote); "
                             "rerun `arpro evaluate` on the folder") from None
        parts += ["<h2>Repair quality (paper Tables 1, 2, 6)</h2>",
                  "<p>Mean ± std per category; lower is better. Baseline: SDEdit without in-filling; "
                  "infill: unguided masked in-filling; guided: AR-Pro.</p>", metrics,
                  "<h2>Verdicts, TNR and runtime (paper Tables 3, 7)</h2>", verdicts]
        if summary.get("guarantee"):
            parts.append(f"<p>{html.escape(guarantee_text(summary))}</p>")
        parts += [f"<p><strong>Warning:</strong> {html.escape(w)}</p>" for w in summary.get("warnings", [])]
    if plots:
        parts += ["<h2>Ablation (paper Figure 7)</h2>"] + [_img(p, p.stem) for p in plots]
    gallery = _own_images("gallery/*/*.png", results)
    if gallery:
        parts.append("<h2>Gallery of repairs</h2>")
        for category in sorted({p.parent.name for p in gallery}):
            parts.append(f"<h3>{html.escape(category)}</h3>")
            parts += [_img(p, f"{category}: {p.stem}") for p in gallery if p.parent.name == category]
    settings_path = results / "settings.json"
    if settings_path.exists():
        parts += ["<h2>Settings</h2>", f"<pre>{html.escape(settings_path.read_text())}</pre>"]
    parts += ["<h2>Versions</h2>", f"<pre>{html.escape(json.dumps(_versions(), indent=2))}</pre>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>arpro report</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>{''.join(parts)}</body></html>\n")
    write_atomic(Path(out), page)
    return Path(out)
