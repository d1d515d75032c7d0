"""Run a variations job: plan, read ahead, batch, generate, write; resumable and shardable across processes."""
from __future__ import annotations
import io, json, sys, time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, asdict
from pathlib import Path, PurePosixPath

from PIL import Image

from aidetect.core import AidetectError
from aidetect.images import BadImage, open_image, source_style, EXTENSIONS
from aidetect.manifest import MANIFEST, file_facts
from .backends import generation_size
from .distributor import Distributor
from .sources import Source, scan_sources, select_sources, variant_relpath, variant_seed
from .writer import BackgroundWriter, DatasetWriter, merge_parts, remove_temp_files, verified_rows, _read_all

__all__ = ['VariationJob', 'RunSummary', 'run_variations', 'FORMATS']

FORMATS = {'source': None, 'jpeg': 'JPEG', 'png': 'PNG', 'webp': 'WEBP'}


@dataclass
class VariationJob:
    "What to make: every choice that changes the bytes of the output lives here."
    src: str
    out: str
    n_per_image: int = 1
    size: int | None = None          # long side of the generated image; None: the model's native size
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
class _Work:
    source: Source
    todo_real: bool
    todo: list            # variant indices still to make


def _plan(sources, n, done, rejected, key_for) -> list[_Work]:
    "What is left to do for each source, given the verified paths (and variant keys) already `done`."
    work = []
    for s in sources:
        if s.rel in rejected: continue
        todo = [k for k in range(n) if key_for(s, k) not in done]
        real = f'real/{s.rel}' not in done
        if todo or real: work.append(_Work(s, real, todo))
    return work


def _stem_clashes(sources) -> set[str]:
    "Sources whose variant names would collide with a sibling's (same folder, same stem)."
    seen = defaultdict(list)
    for s in sources:
        p = PurePosixPath(s.rel); seen[(str(p.parent), p.stem)].append(s.rel)
    return {r for v in seen.values() if len(v) > 1 for r in v}


def _read(work: _Work, backend, job: VariationJob):
    "Reader: bytes, decoded RGB image, save style and the backend's prepared input for one source."
    data = work.source.path.read_bytes()
    im = open_image(data)
    style = source_style(io.BytesIO(data))
    if FORMATS[job.format]: style = dict(format=FORMATS[job.format], quality=None, subsampling=None)
    return data, im, style, backend.prepare(im)


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
    dist = Distributor()
    meta = backend.describe()
    domain = job.domain or src.resolve().name
    size = job.size or backend.default_size
    clashes = _stem_clashes(sources)

    def key_for(s: Source, k: int) -> str:
        "A variant's path without its extension, which depends on the source's format (known once it is read)."
        return variant_relpath(s.rel, meta['generator'], k, '', s.rel not in clashes)

    # Tidy what a killed run left, once, before any process starts writing.
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out)
    dist.wait()
    good, n_bad = verified_rows(out)
    rejected = set(_read_all(out, 'rejected.csv')['path'])
    if n_bad and dist.is_main: log(f"{n_bad} manifest row(s) point at missing or changed files; redoing them")
    mine = dist.shard(sources)
    done = set(good['path']) | {str(PurePosixPath(p).with_suffix('')) for p in good['path'] if p.startswith('ai/')}
    work = _plan(mine, job.n_per_image, done, rejected, key_for)
    summary = RunSummary(sources=len(sources))
    summary.skipped = sum(job.n_per_image - len(w.todo) for w in work) + \
        job.n_per_image * (len(mine) - len(work) - len([s for s in mine if s.rel in rejected]))
    writer = BackgroundWriter(DatasetWriter(out, rank=dist.rank if dist.world > 1 else None))
    n_todo = sum(len(w.todo) for w in work)
    bar = tqdm(total=n_todo, unit='img', desc=f'variations{dist.tag}', disable=(not progress) if progress is not None else None,
               dynamic_ncols=True, file=sys.stderr)
    buckets: dict[tuple, list] = defaultdict(list)

    def base_row(s: Source) -> dict:
        return dict(group=s.rel, domain=domain, category=s.category)

    def flush(dims, items):
        conds = [it['cond'] for it in items]
        seeds = [variant_seed(job.seed, it['work'].source.rel, it['k'], it['attempt']) for it in items]
        t = time.time()
        outs = backend.generate(conds, seeds, *dims)
        summary.timings['generate'] = summary.timings.get('generate', 0) + time.time() - t
        for it, seed, v in zip(items, seeds, outs):
            s = it['work'].source
            if v.flagged:
                if it['attempt'] < job.max_retries:
                    summary.retried += 1
                    enqueue(dict(it, attempt=it['attempt'] + 1)); continue
                summary.blacked_out += 1
                writer.submit('reject', s.rel, 'safety-blackout',
                              f"variant {it['k']}: flagged by the safety checker {it['attempt'] + 1} times (last seed {seed})")
                bar.update(1); continue
            img = v.image
            if job.match_size and img.size != it['src_size']: img = img.resize(it['src_size'], Image.LANCZOS)
            row = dict(base_row(s), label='ai', **meta, seed=seed)
            rel = key_for(s, it['k']) + EXTENSIONS.get(it['style']['format'], '.png')
            writer.submit('write_image', rel, img, it['style'], row)
            summary.done += 1
            bar.update(1)

    def enqueue(it):
        b = buckets[it['dims']]
        b.append(it)
        if len(b) >= job.batch_size: flush(it['dims'], buckets.pop(it['dims']))

    pool = ThreadPoolExecutor(max(1, job.read_workers), thread_name_prefix='aidetect-reader')
    try:
        # Read ahead a few batches; generation (the slow part) then never waits on decoding.
        ahead = max(2 * job.batch_size, 4)
        futures = [pool.submit(_read, w, backend, job) for w in work[:ahead]]
        for i, w in enumerate(work):
            if i + ahead < len(work): futures.append(pool.submit(_read, work[i + ahead], backend, job))
            try: data, im, style, cond = futures[i].result()
            except BadImage as e:
                summary.rejected += 1
                writer.submit('reject', w.source.rel, e.reason, e.detail)
                bar.update(len(w.todo)); continue
            except OSError as e:
                summary.rejected += 1
                writer.submit('reject', w.source.rel, 'unreadable', str(e))
                bar.update(len(w.todo)); continue
            futures[i] = None
            if w.todo_real:
                writer.submit('write_file', f'real/{w.source.rel}', data, dict(base_row(w.source), label='real'))
                summary.real += 1
            dims = generation_size(im.width, im.height, size, backend.size_multiple)
            for k in w.todo:
                enqueue(dict(work=w, k=k, attempt=0, cond=cond, style=style, dims=dims, src_size=im.size))
        while buckets:
            dims = next(iter(buckets)); flush(dims, buckets.pop(dims))
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
