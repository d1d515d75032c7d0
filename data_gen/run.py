"""Run a variations job: plan, read ahead, generate batch by batch, write; resumable and shardable across processes.

The plan is a pure function of the sources and the job: variant jobs are bucketed by generation size and cut into
batches of `batch_size` in source order. A resumed run reruns any batch that is not complete, whole, and writes
only what is missing, so every file comes out of the same batch as in an uninterrupted run: same bytes.
"""
from __future__ import annotations
import io, json, sys, time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, asdict
from pathlib import Path, PurePosixPath

from PIL import Image

from aidetect.core import AidetectError
from aidetect.images import BadImage, open_image, source_style, EXTENSIONS
from aidetect.manifest import MANIFEST, REJECTED
from .distributor import Distributor
from .sources import Source, scan_sources, select_sources, variant_relpath, variant_seed
from .writer import BackgroundWriter, DatasetWriter, merge_parts, remove_temp_files, verified_rows, read_all

__all__ = ['VariationJob', 'RunSummary', 'run_variations', 'FORMATS', 'BLACKOUT']

FORMATS = {'source': None, 'jpeg': 'JPEG', 'png': 'PNG', 'webp': 'WEBP'}
BLACKOUT = 'safety-blackout'   # rejected.csv reason of a variation given up after repeated safety-checker flags


@dataclass
class VariationJob:
    "What to make: every choice that changes the bytes of the output lives here."
    src: str
    out: str
    n_per_image: int = 1
    size: int | None = None          # long side of the generated image; None: the backend's default
    batch_size: int = 4
    seed: int = 0
    limit: int | None = None
    per_category: int | None = None
    format: str = 'source'           # 'source' keeps each source's format (and JPEG quality)
    match_size: bool = True          # resize each variation to its source's width x height
    domain: str | None = None        # default: the SRC folder's name
    max_retries: int = 3             # new seeds to try when the safety checker blacks an image out
    read_workers: int = 2


@dataclass
class RunSummary:
    "What a run did."
    sources: int = 0
    done: int = 0          # variations written by this run
    skipped: int = 0       # variations already in the dataset (verified) and left alone
    real: int = 0          # real images copied by this run
    rejected: int = 0      # inputs that could not be used (see rejected.csv)
    retried: int = 0       # variations regenerated with a new seed after a safety-checker blackout
    blacked_out: int = 0   # variations given up after max_retries blackouts
    elapsed: float = 0.0
    interrupted: bool = False
    timings: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float: return self.done / self.elapsed if self.elapsed else 0.0

    def __str__(self):
        s = (f"{self.done} variations made, {self.skipped} already done, {self.real} real images copied, "
             f"{self.rejected} inputs rejected")
        if self.retried or self.blacked_out: s += f", {self.retried} safety retries, {self.blacked_out} given up"
        return s + f"; {self.elapsed:.1f}s ({self.images_per_s:.2f} images/s)"


@dataclass
class _Item:
    "One variation to make: variant `k` of `source`, at retry `attempt`."
    source: Source
    k: int
    key: str                 # its path in the dataset without extension
    attempt: int = 0


def _stem_clashes(sources) -> set[str]:
    "Sources whose variant names would collide with a sibling's (same folder, same stem)."
    seen = defaultdict(list)
    for s in sources:
        p = PurePosixPath(s.rel); seen[(str(p.parent), p.stem)].append(s.rel)
    return {r for v in seen.values() if len(v) > 1 for r in v}


def _peek_size(path: Path):
    "Upright (width, height) from the file's header alone, or None when the header can't be read."
    try:
        with Image.open(path) as im:
            w, h = im.size
            try: rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)
            except Exception: rotated = False
            return (h, w) if rotated else (w, h)
    except Exception: return None


def _read(source: Source, backend, fmt: str | None):
    "Reader: bytes, decoded RGB image, save style and the backend's prepared input for one source."
    data = source.path.read_bytes()
    im = open_image(data)
    style = source_style(io.BytesIO(data))
    if fmt: style = dict(format=fmt, quality=None, subsampling=None)
    return data, im, style, backend.prepare(im)


def plan_batches(items: list[_Item], dims: dict, batch_size: int) -> list[tuple]:
    "(dims, items) batches: items bucketed by their source's generation size, cut in order, ordered by first item."
    buckets = defaultdict(list)
    for it in items: buckets[dims[it.source.rel]].append(it)
    batches = [(d, b[i:i + batch_size]) for d, b in buckets.items() for i in range(0, len(b), batch_size)]
    order = {it.key: n for n, it in enumerate(items)}
    return sorted(batches, key=lambda db: order[db[1][0].key])


def run_variations(job: VariationJob, backend, progress: bool | None = None, log=print) -> RunSummary:
    "Make `job.n_per_image` variations of every usable image in `job.src` into the dataset `job.out`."
    from tqdm.auto import tqdm
    t0 = time.time()
    if job.format not in FORMATS: raise AidetectError(f"unknown --format {job.format!r}; use one of {list(FORMATS)}")
    if job.n_per_image < 1: raise AidetectError('--n-per-image must be at least 1')
    if job.batch_size < 1: raise AidetectError('--batch-size must be at least 1')
    src, out = Path(job.src), Path(job.out)
    sources = select_sources(scan_sources(src), job.limit, job.per_category)
    if not sources: raise AidetectError(f"no files found in {src} (hidden files are ignored)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise AidetectError(f"--out {out} must not be inside the source folder {src}")
    dist, meta = Distributor(), backend.describe()
    domain, size = job.domain or src.resolve().name, job.size or backend.default_size
    clashes, fmt = _stem_clashes(sources), FORMATS[job.format]

    def key_for(s: Source, k: int) -> str:
        "A variant's path without its extension, which depends on the source's format (known once it is read)."
        return variant_relpath(s.rel, meta['generator'], k, '', s.rel not in clashes)

    # Tidy what a killed run left, once, before any process starts writing: temporary files go, and the manifest
    # keeps only rows whose file is there with its recorded sha256 (the others are redone).
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out)
        good, n_bad = verified_rows(out)
        if n_bad: log(f"{n_bad} manifest row(s) point at missing or changed files; redoing them")
        if len(good) or n_bad: merge_parts(out, good)
    dist.wait()
    good = read_all(out, MANIFEST)
    rej = read_all(out, REJECTED)
    rejected_inputs = set(rej.loc[rej['reason'] != BLACKOUT, 'path'])
    done = set(good['path']) | set(rej.loc[rej['reason'] == BLACKOUT, 'path']) | \
        {str(PurePosixPath(p).with_suffix('')) for p in good['path'] if p.startswith('ai/')}

    mine = [s for s in dist.shard(sources) if s.rel not in rejected_inputs]
    summary = RunSummary(sources=len(sources))
    items = [_Item(s, k, key_for(s, k)) for s in mine for k in range(job.n_per_image)]
    summary.skipped = sum(it.key in done for it in items)
    real_todo = {s.rel for s in mine if f'real/{s.rel}' not in done}
    # sources with nothing left to do are not even opened; the rest are planned from their headers
    busy = {it.source.rel for it in items if it.key not in done} | real_todo
    dims = {}
    for s in mine:
        if s.rel in busy:
            wh = _peek_size(s.path)
            dims[s.rel] = backend.dims_for(*wh, size) if wh else None
    # a source whose header can't be read gets no batch: reading it records why it is unusable
    items = [it for it in items if it.source.rel in busy and dims[it.source.rel] is not None]
    batches = [(d, b) for d, b in plan_batches(items, dims, job.batch_size) if any(it.key not in done for it in b)]
    order = list(dict.fromkeys([it.source.rel for _, b in batches for it in b] + [s.rel for s in mine if s.rel in busy]))
    by_rel, pos = {s.rel: s for s in mine}, {rel: i for i, rel in enumerate(order)}

    writer = BackgroundWriter(DatasetWriter(out, rank=dist.rank if dist.world > 1 else None))
    bar = tqdm(total=sum(it.key not in done for _, b in batches for it in b), unit='img', desc=f'variations{dist.tag}',
               disable=(not progress) if progress is not None else None, dynamic_ncols=True, file=sys.stderr)
    pool = ThreadPoolExecutor(max(1, job.read_workers), thread_name_prefix='aidetect-reader')
    futures, read, failed = {}, {}, set()
    ahead = max(2 * job.batch_size, 8)   # read this many sources ahead: generation never waits on decoding

    def want(i):
        for rel in order[i:i + ahead]:
            if rel not in futures: futures[rel] = pool.submit(_read, by_rel[rel], backend, fmt)

    def get(rel):
        "The read result of source `rel` (None if it is unusable, which is recorded once)."
        if rel in read: return read[rel]
        if rel in failed: return None
        want(pos[rel])
        try: data, im, style, cond = futures.pop(rel).result()
        except (BadImage, OSError) as e:
            reason, detail = (e.reason, e.detail) if isinstance(e, BadImage) else ('unreadable', str(e))
            failed.add(rel); summary.rejected += 1
            writer.submit('reject', rel, reason, detail)
            return None
        if rel in real_todo:
            writer.submit('write_file', f'real/{rel}', data, dict(group=rel, domain=domain, category=by_rel[rel].category,
                                                                  label='real'))
            summary.real += 1; real_todo.discard(rel)
        read[rel] = (im.size, style, cond)
        return read[rel]

    def generate(d, batch):
        seeds = [variant_seed(job.seed, it.source.rel, it.k, it.attempt) for it in batch]
        t = time.time()
        outs = backend.generate([read[it.source.rel][2] for it in batch], seeds, *d)
        summary.timings['generate'] = summary.timings.get('generate', 0) + time.time() - t
        return seeds, outs

    try:
        for bi, (d, batch) in enumerate(batches):
            batch = [it for it in batch if get(it.source.rel) is not None]
            while batch:
                seeds, outs = generate(d, batch)
                retry = []
                for it, seed, v in zip(batch, seeds, outs):
                    if it.key in done: continue       # made by an earlier run; regenerated only to keep the batch whole
                    if v.flagged:
                        if it.attempt < job.max_retries:
                            summary.retried += 1; retry.append(_Item(it.source, it.k, it.key, it.attempt + 1)); continue
                        summary.blacked_out += 1
                        writer.submit('reject', it.key, BLACKOUT, f'flagged by the safety checker {it.attempt + 1} '
                                      f'times (last seed {seed}); no variation kept')
                        bar.update(1); continue
                    size_, style, _ = read[it.source.rel]
                    img = v.image.resize(size_, Image.LANCZOS) if job.match_size and v.image.size != size_ else v.image
                    row = dict(group=it.source.rel, domain=domain, category=it.source.category, label='ai', **meta,
                               seed=seed if backend.seeded else '')
                    writer.submit('write_image', it.key + EXTENSIONS.get(style['format'], '.png'), img, style, row)
                    summary.done += 1; bar.update(1)
                batch = retry
            # forget sources no later batch needs
            later = {it.source.rel for _, b in batches[bi + 1:bi + 1 + ahead] for it in b}
            for rel in [r for r in read if r not in later]: del read[rel]
        for rel in order:   # sources needing only their real copy, or unreadable ones (to record why)
            if rel not in failed and (rel in real_todo or dims.get(rel) is None):
                get(rel); read.pop(rel, None)
    except KeyboardInterrupt:
        summary.interrupted = True
        log('\ninterrupted: finishing the files already generated; rerun the same command to continue')
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        writer.close()
    dist.wait()
    summary.elapsed = time.time() - t0
    if dist.is_main and not summary.interrupted:
        merged = merge_parts(out)
        _append_log(out, job, meta, summary, dist.world, len(merged))
    return summary


def _append_log(out: Path, job, meta, summary, world, n_rows):
    "One JSON line per finished run in DST/runs.jsonl: the command's settings and what it did."
    rec = dict(time=time.strftime('%Y-%m-%dT%H:%M:%S'), job=asdict(job), backend=meta, processes=world,
               manifest_rows=n_rows, summary={k: v for k, v in asdict(summary).items() if k != 'timings'})
    with open(out / 'runs.jsonl', 'a', encoding='utf-8') as f: f.write(json.dumps(rec, default=str) + '\n')
