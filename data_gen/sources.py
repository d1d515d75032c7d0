"""Reader: find the source images of a run and plan, deterministically, what each one becomes."""
from __future__ import annotations
import hashlib, os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aidetect.core import AidetectError

__all__ = ['Source', 'scan_sources', 'select_sources', 'variant_seed', 'variant_relpath']


@dataclass(frozen=True)
class Source:
    "One input file: its posix path relative to SRC (also its group id) and its category (first folder, or '')."
    rel: str
    root: str = field(compare=False, repr=False)

    @property
    def path(self) -> Path: return Path(self.root, *PurePosixPath(self.rel).parts)
    @property
    def category(self) -> str:
        parts = PurePosixPath(self.rel).parts
        return parts[0] if len(parts) > 1 else ''


def scan_sources(src) -> list[Source]:
    "Every regular, non-hidden file under `src`, sorted by relative path (hidden files and folders are skipped)."
    src = Path(src)
    if not src.exists(): raise AidetectError(f"source folder {src} does not exist")
    if not src.is_dir(): raise AidetectError(f"source {src} is not a folder; pass the folder that holds the images")
    out = []
    for d, dirs, files in os.walk(src):
        dirs[:] = sorted(x for x in dirs if not x.startswith('.'))
        for f in files:
            if f.startswith('.'): continue
            p = Path(d, f)
            if p.is_file(): out.append(Source(p.relative_to(src).as_posix(), str(src)))
    return sorted(out, key=lambda s: s.rel)


def select_sources(sources: list[Source], limit: int | None = None, per_category: int | None = None) -> list[Source]:
    "The first `per_category` sources of each category, then the first `limit` overall (both in sorted order)."
    if per_category is not None:
        seen: dict[str, int] = {}
        keep = []
        for s in sources:
            seen[s.category] = seen.get(s.category, 0) + 1
            if seen[s.category] <= per_category: keep.append(s)
        sources = keep
    return sources if limit is None else sources[:limit]


def variant_seed(seed: int, rel: str, k: int, attempt: int = 0) -> int:
    "The seed of variant `k` of source `rel` (retry `attempt`): a function of these alone, not of batching."
    key = f'{seed}\0{rel}\0{k}' + (f'\0{attempt}' if attempt else '')
    # 32 bits: exact in any tool that reads the manifest (spreadsheets, float64 columns) and valid for numpy too
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], 'little')


def variant_relpath(rel: str, generator: str, k: int, ext: str, unique_stem: bool = True) -> str:
    "Where variant `k` of source `rel` goes: ai/<generator>/<source folders>/<stem>__v<k><ext>."
    p = PurePosixPath(rel)
    # two sources that share a stem (a.jpg, a.png) keep their source suffix so their variants don't collide
    stem = p.stem if unique_stem else p.name
    return str(PurePosixPath('ai', generator, p.parent, f'{stem}__v{k}{ext}'))
