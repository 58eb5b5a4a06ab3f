"""The HTML frame shared by report.html, search and compare pages: inline CSS, a tiny tap script, tables.

Self-contained on purpose: a report is opened from CI artifacts, bundles and e-mail attachments, often
offline, so nothing may be fetched at view time (not even a favicon).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

CSS = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f3f4f6;color:#111827}
main{max-width:980px;margin:0 auto;padding:12px}
h1{font-size:1.35rem;margin:10px 0}
section{background:#fff;border-radius:10px;padding:12px 14px;margin:12px 0;box-shadow:0 1px 2px #0001}
h2{font-size:1.1rem;margin:4px 0 10px}
.verdict{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px;padding:12px 14px;border-radius:8px;
  margin-bottom:10px}
.verdict .word{font-size:1.8rem;font-weight:800;letter-spacing:.05em}
.verdict.pass{background:#dcfce7;color:#14532d}.verdict.fail{background:#fee2e2;color:#7f1d1d}
.verdict.incomplete{background:#fef9c3;color:#713f12}.verdict.inconclusive{background:#f3e8ff;color:#581c87}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.86rem}
th,td{padding:5px 8px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#f9fafb;white-space:nowrap}
tr.pass td:nth-child(5){color:#15803d;font-weight:700}tr.fail td:nth-child(5){color:#b91c1c;font-weight:700}
#budgets td:nth-child(-n+5){white-space:nowrap}
tr.fail{background:#fef2f2}tr.not_measured td:nth-child(5){color:#a16207;font-weight:700}
tr.inconclusive td:nth-child(5){color:#7e22ce;font-weight:700}
figure{margin:0}svg.plot{width:100%;height:auto;max-width:760px;display:block}
.tip{min-height:1.2em;font-size:.85rem;color:#374151;margin:4px 0}
.pt{cursor:pointer}.pt:hover circle,.pt:hover polygon{stroke-width:3}
ul.warnings li{margin:4px 0;color:#713f12}
footer{font-size:.8rem;color:#6b7280;text-align:center;padding:10px}
@media (max-width:600px){main{padding:6px}section{padding:10px 8px}.verdict .word{font-size:1.4rem}}
"""

# Touch screens have no hover: a tap on a mark writes its <title> text under the figure.
SCRIPT = """
document.querySelectorAll('figure').forEach(function (figure) {
  var tip = document.createElement('p'); tip.className = 'tip'; figure.appendChild(tip);
  figure.querySelectorAll('.pt').forEach(function (mark) {
    mark.addEventListener('click', function () { tip.textContent = mark.getAttribute('data-tip'); });
  });
});
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] | None = None,
               table_id: str = "") -> str:
    """A scrollable table; every cell is escaped (cells are plain text)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f" class='{escape(row_classes[index])}'" if row_classes else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>")
    ident = f" id='{escape(table_id)}'" if table_id else ""
    return (f"<div class='scroll'><table{ident}><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render_page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete HTML document from (title, trusted inner HTML, anchor id) sections."""
    blocks = []
    for heading, inner, anchor in sections:
        ident = f" id='{escape(anchor)}'" if anchor else ""
        blocks.append(f"<section{ident}><h2>{escape(heading)}</h2>{inner}</section>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{escape(title)}</h1>{''.join(blocks)}"
            "<footer>written by slimline; self-contained, no network needed to view</footer></main>"
            f"<script>{SCRIPT}</script></body></html>\n")
