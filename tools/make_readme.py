"""Make README.md from nbs/index.ipynb.

nbdev's own `nbdev-readme` renders through Quarto; it is used when the `quarto` binary is on PATH. Without Quarto
(its PyPI package downloads the binary when it is built, which offline machines can't do) the notebook is converted
with nbconvert to GitHub markdown: hidden cells dropped, `#|` directives removed, outputs kept.

    python tools/make_readme.py           # write README.md
    python tools/make_readme.py --check   # exit 1 if README.md is not what index.ipynb makes
"""
from __future__ import annotations
import argparse, copy, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB, README = ROOT / 'nbs' / 'index.ipynb', ROOT / 'README.md'
HEADER = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'
_DIRECTIVE = re.compile(r'^\s*#\|\s*(\w[\w-]*)(.*)$')


def _directives(src: str) -> dict:
    return {m.group(1): m.group(2).strip() for line in src.splitlines() if (m := _DIRECTIVE.match(line))}


def readme_markdown(nb_path: Path = NB) -> str:
    "GitHub markdown for `nb_path`, without Quarto."
    import nbformat
    from nbconvert import MarkdownExporter
    nb = nbformat.read(nb_path, as_version=4)
    cells = []
    for c in nb.cells:
        d = _directives(c.source) if c.cell_type == 'code' else {}
        if c.cell_type == 'raw' or 'hide' in d or 'default_exp' in d: continue
        c = copy.deepcopy(c)
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not _DIRECTIVE.match(l)).strip('\n')
            if 'hide_input' in d or 'echo' in d and d['echo'].lower() == 'false': c.source = ''
            if 'hide_output' in d or 'output' in d and d['output'].lower() == 'false': c.outputs = []
            # progress bars and warnings are noise in a README
            c.outputs = [o for o in c.outputs if not (o.get('output_type') == 'stream' and o.get('name') == 'stderr')]
            for o in c.outputs:   # GitHub shows a DataFrame's text form more cleanly than its styled HTML
                if 'data' in o and 'text/plain' in o['data']: o['data'].pop('text/html', None)
        cells.append(c)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}   # fenced code blocks get ```python
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return HEADER + body


def _quarto_markdown() -> str:
    "What `nbdev-readme` (Quarto) makes, leaving README.md as it was."
    old = README.read_bytes() if README.exists() else None
    try:
        subprocess.run(['nbdev-readme'], cwd=ROOT, check=True)
        return README.read_text(encoding='utf-8')
    finally:
        if old is not None: README.write_bytes(old)


def make(check: bool = False) -> int:
    "Write README.md, or with `check` say whether it is up to date; returns an exit status."
    text = _quarto_markdown() if shutil.which('quarto') else readme_markdown()
    if check:
        if not README.exists() or README.read_text(encoding='utf-8') != text:
            print('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`', file=sys.stderr)
            return 1
        return 0
    README.write_text(text, encoding='utf-8')
    return 0


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    sys.exit(make(ap.parse_args().check))
