"""The review page: one self-contained HTML file of thumbnails and captions, with search and filters (no network)."""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import html
import re

from tools.thumbnails import Thumb

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;z-index:1}
h1{font-size:18px;margin:0 0 4px}
.summary{margin:2px 0;color:#444}
table.models{border-collapse:collapse;margin:4px 0}
table.models td,table.models th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.controls{display:flex;gap:16px;align-items:center;margin-top:6px}
#q{width:320px;padding:4px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px;padding:12px 16px}
body.compare main{grid-template-columns:1fr}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow-wrap:anywhere}
body.compare .item{display:grid;gap:10px}
.item[hidden]{display:none}
.item.err{border-color:#c33}
.item.differs{border-left:6px solid #e6a700}
.thumb{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
.nothumb{width:160px;height:160px;background:#eee;color:#777;font-size:12px;display:flex;align-items:center;
justify-content:center;text-align:center}
.key{font-family:monospace;font-size:12px;color:#555;margin:4px 0}
.caption{margin:2px 0}
.error{color:#b00;margin:2px 0}
.model{color:#777;font-size:12px}
mark{background:#ffe08a}
"""

SCRIPT = """
(() => {
  const q = document.getElementById('q'), errors = document.getElementById('errors');
  const diff = document.getElementById('diff'), shown = document.getElementById('shown');
  const items = Array.from(document.querySelectorAll('.item'));
  const text = new Map(items.map(item => [item, Array.from(item.querySelectorAll('.key, .cell'),
    part => part.textContent + ' ' + (part.title || '')).join(' ').toLowerCase()]));
  function fromHash() {
    q.value = ''; errors.checked = false; if (diff) diff.checked = false;
    for (const part of location.hash.slice(1).split('&')) {
      if (part === 'errors') errors.checked = true;
      else if (part === 'diff' && diff) diff.checked = true;
      else if (part.startsWith('q=')) q.value = decodeURIComponent(part.slice(2));
    }
  }
  function apply() {
    const needle = q.value.trim().toLowerCase();
    let count = 0;
    for (const item of items) {
      const keep = (!errors.checked || item.classList.contains('err'))
        && (!diff || !diff.checked || item.classList.contains('differs'))
        && (!needle || text.get(item).includes(needle));
      item.hidden = !keep;
      if (keep) count++;
    }
    shown.textContent = count + ' of ' + items.length + ' shown';
  }
  function toHash() {
    const parts = [];
    if (errors.checked) parts.push('errors');
    if (diff && diff.checked) parts.push('diff');
    if (q.value.trim()) parts.push('q=' + encodeURIComponent(q.value.trim()));
    history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname);
    apply();
  }
  for (const control of [q, errors, diff]) if (control) control.addEventListener('input', toHash);
  window.addEventListener('hashchange', () => { fromHash(); apply(); });
  fromHash();
  apply();
})();
"""


@dataclasses.dataclass
class Cell:
    """One model's outcome for an image: a caption or an error; `marked` are the caption's words to highlight."""

    caption: str | None
    error: str | None
    model: str | None = None
    marked: frozenset[int] = frozenset()


@dataclasses.dataclass
class Item:
    """One image on the page: its thumbnail, key and uri, and one cell per column (one in a gallery)."""

    key: str
    uri: str
    thumb: Thumb
    cells: list[Cell]

    @property
    def differs(self) -> bool:
        return len({(c.caption, c.error) for c in self.cells}) > 1


def mark_differences(cells: list[Cell]) -> None:
    """Mark in each caption the words that the first caption lacks (the first: the words any other one lacks)."""
    words = [(c.caption or "").split() for c in cells]
    if len(cells) < 2 or any(c.caption is None for c in cells):
        return
    first_kept: set[int] = set(range(len(words[0])))
    for j in range(1, len(cells)):
        matcher = difflib.SequenceMatcher(a=words[0], b=words[j], autojunk=False)
        blocks = matcher.get_matching_blocks()
        kept_a = {block.a + k for block in blocks for k in range(block.size)}
        kept_b = {block.b + k for block in blocks for k in range(block.size)}
        first_kept &= kept_a
        cells[j].marked = frozenset(set(range(len(words[j]))) - kept_b)
    cells[0].marked = frozenset(set(range(len(words[0]))) - first_kept)


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def _caption(cell: Cell) -> str:
    shown, word = [], 0
    for token in re.findall(r"\S+|\s+", cell.caption):  # the caption's own spacing is kept, words are counted
        if token.isspace():
            shown.append(html.escape(token))
            continue
        shown.append(f"<mark>{html.escape(token)}</mark>" if word in cell.marked else html.escape(token))
        word += 1
    return f'<p class="caption">{"".join(shown)}</p>'


def _cell(cell: Cell) -> str:
    body = _caption(cell) if cell.error is None else f'<p class="error">{html.escape(cell.error)}</p>'
    model = f'<div class="model">{html.escape(cell.model)}</div>' if cell.model else ""
    return f'<div class="cell">{body}{model}</div>'


def _item(item: Item) -> str:
    classes = (
        "item"
        + (" err" if any(c.error is not None for c in item.cells) else "")
        + (" differs" if len(item.cells) > 1 and item.differs else "")
    )
    thumb = (
        f'<img class="thumb" alt="" src="{html.escape(item.thumb.src)}">'
        if item.thumb.src
        else f'<div class="nothumb" title="{html.escape(item.thumb.error or "")}">'
        f"{'no thumbnail' if item.thumb.error else 'no image'}</div>"
    )
    return (
        f'<article class="{classes}">{thumb}<div class="key" title="{html.escape(item.uri)}">'
        f"{html.escape(item.key)}</div>{''.join(_cell(c) for c in item.cells)}</article>"
    )


def render(
    title: str,
    items: list[Item],
    *,
    summary: list[str] = (),
    models: list[list[str]] | None = None,
    model_header: tuple[str, ...] = (),
) -> str:
    """The whole page; every text from rows is escaped here. `models` (a row of texts per model) turns on the
    side-by-side layout with one column per model and the differences-only filter."""
    compare = models is not None
    head = "".join(f"<th>{html.escape(h)}</th>" for h in model_header)
    table = (
        ""
        if not compare
        else f'<table class="models"><tr>{head}</tr>'
        + "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in models)
        + "</table>"
    )
    lines = "".join(f'<p class="summary">{html.escape(line)}</p>' for line in summary)
    diff = '<label><input type="checkbox" id="diff"> differences only</label>' if compare else ""
    style = STYLE + (
        f"body.compare .item{{grid-template-columns:170px 160px repeat({len(models)},1fr)}}\n" if compare else ""
    )
    policy = (
        f"default-src 'none'; img-src data:; style-src {_csp_hash(style)}; script-src {_csp_hash(SCRIPT)}; "
        "form-action 'none'; base-uri 'none'"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{style}</style></head>
<body class="{"compare" if compare else "gallery"}"><header><h1>{html.escape(title)}</h1>{lines}{table}
<div class="controls"><input type="search" id="q" placeholder="search captions, keys, errors">
<label><input type="checkbox" id="errors"> errors only</label>{diff}<span id="shown"></span></div></header>
<main>
{chr(10).join(_item(item) for item in items)}
</main><script>{SCRIPT}</script></body></html>
"""
