"""Import variations made elsewhere (e.g. DALL·E 2 images downloaded by hand) as an aidetect dataset."""
from __future__ import annotations
import io, re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from aidetect.core import AidetectError
from aidetect.images import BadImage, open_image, source_style, EXTENSIONS
from .sources import scan_sources, variant_relpath
from .writer import DatasetWriter, merge_parts, remove_temp_files

__all__ = ['pair_variants', 'import_variants', 'ImportSummary']

# what tools append to a file name when they save several variations of one image: x_1.png, x-v2.png, x__v0.png ...
_VARIANT_SUFFIX = re.compile(r'(?:__v|_v|-v|_|-| \()\d+\)?$')


@dataclass
class ImportSummary:
    paired: int = 0
    orphans: int = 0
    real: int = 0
    rejected: int = 0

    def __str__(self):
        return (f'{self.paired} variations imported from {self.real} real images; {self.orphans} files without a '
                f'source and {self.rejected} unreadable inputs listed in rejected.csv')


def pair_variants(variants: list, sources: list) -> tuple[dict, dict]:
    """Pair variant files with sources by file-name stem: ({source rel: [variant rels]}, {orphan rel: reason}).

    A variant pairs with the source whose stem equals its own, or equals its own without a trailing variant number
    (`x_1`, `x-v2`, `x__v0`, `x (3)`). When several sources share the stem, the one in the same folder wins."""
    by_stem = defaultdict(list)
    for s in sources: by_stem[PurePosixPath(s).stem].append(s)
    pairs, orphans = defaultdict(list), {}
    for v in variants:
        p = PurePosixPath(v)
        stems = [p.stem] + ([_VARIANT_SUFFIX.sub('', p.stem)] if _VARIANT_SUFFIX.search(p.stem) else [])
        cands = next((by_stem[s] for s in stems if by_stem.get(s)), [])
        if len(cands) > 1:
            cands = [c for c in cands if PurePosixPath(c).parent == p.parent] or cands
        if not cands: orphans[v] = f'no source image named {stems[-1]}.* under --real'
        elif len(cands) > 1: orphans[v] = f'ambiguous: {len(cands)} sources are named {PurePosixPath(cands[0]).stem}.* ({", ".join(cands[:3])})'
        else: pairs[cands[0]].append(v)
    return {s: sorted(v) for s, v in sorted(pairs.items())}, orphans


def import_variants(variants_dir, real_dir, out, generator: str, model: str = '', domain: str | None = None,
                    match_source: bool = True) -> ImportSummary:
    "Make dataset `out` from the real images in `real_dir` and their variations in `variants_dir`, paired by stem."
    if not re.fullmatch(r'[\w.+-]+', generator or ''):
        raise AidetectError(f'--generator must be a simple name (letters, digits, . _ + -), got {generator!r}')
    vdir, rdir, out = Path(variants_dir), Path(real_dir), Path(out)
    variants, sources = scan_sources(vdir), scan_sources(rdir)
    if not variants: raise AidetectError(f'no files found in {vdir}')
    pairs, orphans = pair_variants([v.rel for v in variants], [s.rel for s in sources])
    domain, summary = domain or rdir.resolve().name, ImportSummary(orphans=len(orphans))
    if out.exists(): remove_temp_files(out)
    by_rel = {s.rel: s for s in sources}
    w = DatasetWriter(out)
    try:
        for o, reason in orphans.items(): w.reject(f'variants/{o}', 'no-source', reason)
        for rel, vs in pairs.items():
            src = by_rel[rel]
            data = src.path.read_bytes()
            try: im = open_image(data)
            except BadImage as e:
                w.reject(rel, e.reason, e.detail); summary.rejected += 1; continue
            cat = src.category
            base = dict(group=rel, domain=domain, category=cat)
            if f'real/{rel}' not in w.manifest.keys: w.write_file(f'real/{rel}', data, dict(base, label='real'))
            summary.real += 1
            style = source_style(io.BytesIO(data))
            for k, v in enumerate(vs):
                vdata = (vdir / v).read_bytes()
                try: vim = open_image(vdata)
                except BadImage as e:
                    w.reject(f'variants/{v}', e.reason, e.detail); summary.rejected += 1; continue
                row = dict(base, label='ai', generator=generator, model=model)
                key = variant_relpath(rel, generator, k, '')
                if match_source:   # same format, quality and size as the source: no shortcut for a detector
                    w.write_image(key + EXTENSIONS.get(style['format'], '.png'),
                                  vim.resize(im.size, Image.LANCZOS) if vim.size != im.size else vim, style, row)
                else: w.write_file(key + PurePosixPath(v).suffix.lower(), vdata, row)
                summary.paired += 1
    finally: w.close()
    merge_parts(out)
    return summary
