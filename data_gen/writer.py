"""Writer: put real copies and variations into a dataset folder, one durable manifest row per finished file."""
from __future__ import annotations
import os, queue, threading
from pathlib import Path, PurePosixPath

import pandas as pd

from aidetect.core import atomic_path, sha256_file, write_bytes_atomic
from aidetect.images import encode_image
from aidetect.manifest import (MANIFEST, REJECTED, MANIFEST_COLUMNS, REJECTED_COLUMNS, CsvAppender, file_facts,
                               make_manifest, read_rows, write_manifest)

__all__ = ['DatasetWriter', 'BackgroundWriter', 'PARTS', 'read_all', 'verified_rows', 'merge_parts', 'remove_temp_files']

PARTS = '.parts'   # per-process manifests of a distributed run, merged into manifest.csv at its end


def _part_files(out: Path, name: str) -> list[Path]:
    stem = Path(name).stem
    return sorted((out / PARTS).glob(f'{stem}.rank*.csv'))


def read_all(out: Path, name: str) -> pd.DataFrame:
    "Rows of `name` (manifest.csv or rejected.csv) in `out` and in any per-process parts, deduplicated."
    frames = [read_rows(f) for f in [out / name, *_part_files(out, name)] if f.exists() and f.stat().st_size]
    if not frames: return pd.DataFrame(columns=MANIFEST_COLUMNS if name == MANIFEST else REJECTED_COLUMNS)
    return pd.concat(frames, ignore_index=True).drop_duplicates()


def verified_rows(out: Path) -> tuple[pd.DataFrame, int]:
    "Manifest rows (from manifest.csv and parts) whose file exists with the recorded size and sha256; and how many failed."
    df = read_all(out, MANIFEST).drop_duplicates('path', keep='last')
    ok = []
    for p, sha in zip(df['path'], df['sha256']):
        f = out / p
        ok.append(f.is_file() and sha256_file(f) == sha)
    return df.loc[pd.Series(ok, index=df.index, dtype=bool)].reset_index(drop=True), int(len(ok) - sum(ok))


def merge_parts(out: Path, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    "Merge parts and main files into sorted manifest.csv (or write `rows` as it) and rejected.csv; returns the manifest."
    out = Path(out)
    if rows is None: rows = read_all(out, MANIFEST).drop_duplicates('path', keep='last')
    m = make_manifest(rows).sort_values('path').reset_index(drop=True)
    write_manifest(m, out)
    rej = read_all(out, REJECTED)
    rej = rej[~rej['path'].isin(set(m['path']))].sort_values(list(REJECTED_COLUMNS)).reset_index(drop=True)
    with atomic_path(out / REJECTED) as tmp: rej.to_csv(tmp, index=False, lineterminator='\n')
    for f in _part_files(out, MANIFEST) + _part_files(out, REJECTED): f.unlink()
    if (out / PARTS).exists() and not any((out / PARTS).iterdir()): (out / PARTS).rmdir()
    return m


def remove_temp_files(out: Path) -> int:
    "Delete the temporary files a killed run left behind (`.<name>.<random>.tmp`); returns how many."
    n = 0
    for d, _, files in os.walk(out):
        for f in files:
            if f.startswith('.') and f.endswith('.tmp'):
                Path(d, f).unlink(missing_ok=True); n += 1
    return n


class DatasetWriter:
    "Writes files and rows of one dataset; `rank` names this process's part files in a distributed run."
    def __init__(self, out, rank: int | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        if rank is None: mf, rf = self.out / MANIFEST, self.out / REJECTED
        else:
            (self.out / PARTS).mkdir(exist_ok=True)
            mf, rf = self.out / PARTS / f'manifest.rank{rank}.csv', self.out / PARTS / f'rejected.rank{rank}.csv'
        self.manifest = CsvAppender(mf, MANIFEST_COLUMNS)
        self.rejected = CsvAppender(rf, REJECTED_COLUMNS, key=REJECTED_COLUMNS)

    def write_file(self, rel: str, data: bytes, row: dict) -> dict:
        "Write `data` to `rel` (atomically), then append its manifest row with what is on disk."
        write_bytes_atomic(self.out / PurePosixPath(rel), data)
        row = {**row, 'path': rel, **file_facts(None, data)}
        self.manifest.append(row)
        return row

    def write_image(self, rel: str, image, style: dict, row: dict) -> dict:
        "Encode `image` in `style` (format, quality, subsampling) and write it as `rel`."
        return self.write_file(rel, encode_image(image, style['format'], style.get('quality'), style.get('subsampling')), row)

    def reject(self, rel: str, reason: str, detail: str = ''):
        "Record that input `rel` could not be used, and why."
        self.rejected.append(dict(path=rel, reason=reason, detail=detail))

    def close(self):
        self.manifest.close(); self.rejected.close()


class BackgroundWriter:
    "Runs a `DatasetWriter`'s calls on one background thread so encoding and saving overlap with generation."
    def __init__(self, writer: DatasetWriter, maxsize: int = 64):
        self.writer, self.q, self.error = writer, queue.Queue(maxsize), None
        self.thread = threading.Thread(target=self._loop, name='aidetect-writer', daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            item = self.q.get()
            if item is None: break
            fn, args, done = item
            if self.error is None:
                try:
                    r = getattr(self.writer, fn)(*args)
                    if done is not None: done(r)
                except BaseException as e: self.error = e
            self.q.task_done()

    def submit(self, fn: str, *args, done=None):
        "Queue `writer.<fn>(*args)`; `done(result)` is called on the writer thread when it has been written."
        if self.error is not None: raise self.error
        self.q.put((fn, args, done))

    def close(self):
        "Finish everything queued, stop the thread, close the files; re-raise the first write error."
        self.q.put(None); self.thread.join(); self.writer.close()
        if self.error is not None: raise self.error
