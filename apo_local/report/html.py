"""One self-contained HTML page: inline CSS, plots as base64 data URIs, no external resource.

A small inline script sets ``<body data-plots-loaded="N">`` once every plot image has decoded
(``data-plots-expected`` holds how many there are), so a headless browser can check the render.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1200px;
     color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.meta{color:#666;font-size:.9em} img.plot{max-width:100%;display:block;margin:8px 0;border:1px solid #eee}
table{border-collapse:collapse;font-size:.85em;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.agg td{background:#fafaf0} .warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;border-radius:4px;margin:8px 0}
.ok{color:#2a7a2a} pre.diff{white-space:pre-wrap;background:#fafafa;border:1px solid #ddd;padding:10px;font-size:.9em}
del{background:#ffd7d5;text-decoration:line-through} ins{background:#d4f8d4;text-decoration:none}
.prompt{white-space:pre-wrap;font-family:monospace;font-size:.85em} details summary{cursor:pointer;color:#1f5fa0}
td.text{max-width:520px} .op-edit{color:#1f77b4} .op-paraphrase{color:#ff7f0e} .op-initial{color:#444}
.fate-selected{font-weight:bold;color:#d62728} .fate-beam{font-weight:bold;color:#2ca02c}
.fate-dropped,.fate-rejected{color:#888;text-decoration:line-through}
"""

SCRIPT = """
(function(){
  function count(){
    var imgs=document.querySelectorAll('img.plot'), ok=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ ok++; } }
    document.body.setAttribute('data-plots-loaded', String(ok));
  }
  window.addEventListener('load', count);
})();
"""


def esc(s) -> str:
    return html.escape("" if s is None else str(s))


class Page:
    """The page being built; ``plots_dir``: where ``plot`` also saves each PNG (created on first use)."""

    def __init__(self, title: str, plots_dir: Path | None = None):
        self.title = title
        self.parts: list[str] = []
        self.plots = 0
        self.plots_dir = plots_dir

    def h(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        a = f' id="{esc(anchor)}"' if anchor else ""
        self.parts.append(f"<h{level}{a}>{esc(text)}</h{level}>")

    def p(self, text: str, cls: str | None = None) -> None:
        self.parts.append(f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{esc(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def img(self, png: bytes, alt: str) -> None:
        self.plots += 1
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">')

    def plot(self, name: str, png: bytes, alt: str) -> None:
        """Embed ``png`` and save it as ``plots_dir/name``."""
        if self.plots_dir is not None:
            self.plots_dir.mkdir(exist_ok=True, mode=0o700)
            (self.plots_dir / name).write_bytes(png)
        self.img(png, alt)

    def table(
        self,
        header: list[str],
        rows: Iterable[list],
        classes: Iterable[str] | None = None,
        raw_cols: set[int] = frozenset(),
    ) -> None:
        out = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
        classes = list(classes) if classes is not None else None
        for k, row in enumerate(rows):
            cls = f' class="{classes[k]}"' if classes and classes[k] else ""
            cells = []
            for i, v in enumerate(row):
                num = isinstance(v, (int, float)) and not isinstance(v, bool)
                text = v if i in raw_cols else esc(fmt(v))
                cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))

    def render(self, subtitle: str = "") -> str:
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{CSS}</style></head>\n"
            f'<body data-plots-expected="{self.plots}" data-plots-loaded="0">'
            f"<h1>{esc(self.title)}</h1>"
            + (f'<p class="meta">{esc(subtitle)}</p>' if subtitle else "")
            + "\n".join(self.parts)
            + f"<script>{SCRIPT}</script></body></html>\n"
        )


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def diff_markup(ops: list[tuple[str, str]]) -> str:
    tag = {"equal": "{}", "delete": "<del>{}</del>", "insert": "<ins>{}</ins>"}
    return '<pre class="diff">' + "".join(tag[op].format(esc(t)) for op, t in ops) + "</pre>"
