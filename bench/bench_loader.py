"""Loader speed: images/s of aidetect's training loader ÷ a plain PIL reference, on the same JPEG photos and cores.

For each photo size (500×333, 1500×1000 and 3000×2000 px) the bench makes `--n` JPEG photos (q90): crops of
scikit-image's sample photos, resized, with a little sensor-like grain so that they compress like photos rather than
like smooth upscales. Then, side by side on the same files and cores:

- reference: PIL only, one process per core: open, `draft` to the smallest libjpeg scale >= 2×224 px, centre square,
  resize to 224 px (bilinear) and make a uint8 array. This is the target's reference, and stays so whatever the
  loader drafts to;
- reference at the loader's factor: the same with `draft` to >= `--draft-factor`×224 px (default 1, what
  `detector_dls` uses by default), so that what DCT-domain scaling alone buys PIL is on the line too;
- decode: the reference's work at the loader's factor with aidetect's decoder instead of PIL's: `open_image(draft=...)`,
  which decodes JPEGs with libjpeg-turbo (simplejpeg) at PIL's draft scale (`--fast`: with its fast DCT and
  upsampling), then the same resize;
- aidetect: `detector_dls(size=224, aug=--aug, draft_factor=--draft-factor)`'s training loader with its default
  worker count, batches of `--bs`.
  Where there is a GPU the batch transforms (augmentation, normalisation) run on it and are timed with the loader;
  without one they would run on the same CPU cores as the decoding, so the loader is timed up to the uint8 batch (what
  the CPU must deliver to a GPU) and the CPU cost of the batch transforms is printed on its own line.

Where there is a GPU, a fourth column: the GPU path, `aidetect.decode.decode_batch` (threads read the files' bytes;
nvJPEG decodes each batch of `--bs` on the device and crop-resizes it there).

Each side reads every file `--rounds` times (the loader: a manifest listing each file `--rounds` times), so process
start-up is paid once per run on both sides, as in a real epoch. Runs alternate (reference, loader, ...) `--repeats`
times and the best of each is kept. Target: loader ÷ reference >= 1.3 at 1500 and 3000 px, >= 1.0 at 500 px.

Besides images/s (wall clock), each side's CPU time per image is printed (this process and its worker processes):
on a machine shared with other jobs the wall-clock figures move with the load, the CPU times much less. The
decoders are also compared in this one process, without pools (`in one process`), the steadiest reading of the two.

    python bench/bench_loader.py [--n 192] [--sizes 500 1500 3000] [--rounds 4] [--repeats 2] [--aug fastai] [--bs 64] [--fast]
                                 [--draft-factor 1]   # 2: the loader as models saved before the factor was a setting
    python bench/bench_loader.py --prepared 448    # also the loader on an `aidetect prepare`d copy at 448 px
"""
import argparse, os, resource, sys, tempfile, time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SIZES = {500: (500, 333), 1500: (1500, 1000), 3000: (3000, 2000)}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def make_photos(out: Path, w: int, h: int, n: int, seed: int = 0) -> list:
    "`n` JPEG photos (q90) of `w`×`h` px cut from scikit-image's samples, with fixed grain; returns their paths."
    from PIL import Image
    from aidetect.demo import SAMPLE_PHOTOS, sample_photo_path
    from aidetect.images import open_image
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    grain = rng.normal(0, 4, (256, 256, 3)).astype(np.float32)   # tiled: cheap, and real photos are never smooth
    photos = [open_image(sample_photo_path(p)) for d in SAMPLE_PHOTOS.values() for p in d]
    files = []
    for i in range(n):
        im = photos[i % len(photos)]
        s = min(im.width / w, im.height / h) * rng.uniform(0.7, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = rng.randint(0, im.width - cw + 1), rng.randint(0, im.height - ch + 1)
        a = np.asarray(im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC), dtype=np.float32)
        oy, ox = rng.randint(0, 256, 2)
        a += np.tile(np.roll(grain, (oy, ox), (0, 1)), (h // 256 + 1, w // 256 + 1, 1))[:h, :w]
        f = out / f'{i:04d}.jpg'
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f, quality=90)
        files.append(f)
    return files


def _reference_part(args):
    "Decode (drafted to >= `factor`×`size`), shrink and array-ify `files` the plain way; returns how many."
    from PIL import Image
    files, size, factor = args
    for f in files:
        im = Image.open(f)
        im.draft('RGB', (factor * size, factor * size))
        im = im.convert('RGB')
        s = min(im.size); l, t = (im.width - s) // 2, (im.height - s) // 2
        np.asarray(im.resize((size, size), Image.BILINEAR, box=(l, t, l + s, t + s)))
    return len(files)


def _decode_part(args):
    "The reference's work with aidetect's decoder (`open_image` with `draft`) instead of PIL's; returns how many."
    from PIL import Image
    from aidetect.images import open_image
    files, size, factor, fast = args
    for f in files:
        im = open_image(f, draft=(factor * size, factor * size), fast=fast)
        s = min(im.size); l, t = (im.width - s) // 2, (im.height - s) // 2
        np.asarray(im.resize((size, size), Image.BILINEAR, box=(l, t, l + s, t + s)))
    return len(files)


def cpu_seconds() -> float:
    "CPU time of this process and of its finished child processes (pool and DataLoader workers are joined)."
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed(run) -> tuple:
    "(images/s, CPU ms per image) of `run()`, which returns how many images it made."
    c, t = cpu_seconds(), time.perf_counter()
    n = run()
    return n / (time.perf_counter() - t), (cpu_seconds() - c) / n * 1000


def reference(files: list, size: int, rounds: int, factor: int = 2, part=_reference_part, *extra) -> tuple:
    "The plain PIL path (or `part`) drafting to `factor`×`size`, one process per core (start-up included): (images/s, CPU ms/image)."
    n = cores()
    todo = [f for _ in range(rounds) for f in files]
    parts = [(todo[i::n], size, factor, *extra) for i in range(n)]
    def run():
        with get_context('fork').Pool(n) as pool: return sum(pool.map(part, parts))
    return timed(run)


def one_process(files: list, size: int, repeats: int, factor: int) -> dict:
    "CPU ms per image of the references' and the decode column's work in this process (no pool), best of `repeats`."
    sides = {'reference': (_reference_part, (2,)), f'reference {factor}×': (_reference_part, (factor,)),
             'decode': (_decode_part, (factor, False)), 'decode --fast': (_decode_part, (factor, True))}
    best = {}
    for _ in range(repeats):   # interleaved, like the pools
        for name, (part, extra) in sides.items():
            c = time.process_time(); part((files, size, *extra))
            best[name] = min(best.get(name, np.inf), (time.process_time() - c) / len(files) * 1000)
    return best


def loader_items(dls, n: int, repeats: int) -> float:
    "CPU ms per image of the training loader's item work (file → crop-resized uint8 tensor, with its label) in this process, one thread."
    import torch
    dl, threads = dls.train, torch.get_num_threads()
    torch.set_num_threads(1)   # as in a loader worker: no intra-op threads (they would spin on a loaded machine)
    try:
        best = np.inf
        for _ in range(repeats):
            c = time.process_time()
            for i in range(n): dl.do_item(i)
            best = min(best, (time.process_time() - c) / n * 1000)
    finally: torch.set_num_threads(threads)
    return best


def gpu_path(files: list, size: int, rounds: int, bs: int) -> tuple:
    "`decode_batch` on CUDA over batches of `bs` files, their bytes read by threads: (images/s, CPU ms/image)."
    import torch
    from concurrent.futures import ThreadPoolExecutor
    from aidetect.decode import decode_batch
    todo = [f for _ in range(rounds) for f in files]
    def run():
        with ThreadPoolExecutor(cores()) as ex:
            for i in range(0, len(todo), bs): decode_batch(list(ex.map(Path.read_bytes, todo[i:i + bs])), size, 'cuda')
        torch.cuda.synchronize()
        return len(todo)
    return timed(run)


def write_dataset(root: Path, files: list) -> Path:
    "A dataset folder (manifest.csv) over `files`, which lie below `root`; half the rows labelled ai."
    from aidetect.dataset import file_facts, write_manifest
    write_manifest([dict(path=f.relative_to(root).as_posix(), label=('ai', 'real')[i % 2], group=f'g{i}',
                         domain='bench', **file_facts(f)) for i, f in enumerate(files)], root)
    return root


def loader_dls(root: Path, size: int, rounds: int, aug: str, bs: int, factor: int = 1):
    "`detector_dls` (drafting to `factor`×`size`) over dataset `root`'s rows, each listed `rounds` times, no validation split."
    import pandas as pd
    from aidetect.dataset import load_datasets
    from aidetect.data import detector_dls
    df = load_datasets(root)
    df = pd.concat([df.assign(group=df['group'] + f'-{k}') for k in range(rounds)], ignore_index=True)
    return detector_dls(df, size=size, bs=bs, aug=aug, valid_pct=0, verbose=False, draft_factor=factor)


def loader(dls, batch_tfms: bool) -> tuple:
    "One epoch of `dls.train` (worker start-up included): (images/s, CPU ms/image); without `batch_tfms`, up to the uint8 batch."
    import torch
    from fastai.vision.all import Pipeline
    dl = dls.train if batch_tfms else dls.train.new(after_batch=Pipeline([]))
    def run():
        n = 0
        for xb, _ in dl: n += len(xb)
        if dls.device.type == 'cuda': torch.cuda.synchronize()
        return n
    return timed(run)


def batch_tfms_cost(dls) -> float:
    "Images/s of the batch transforms alone, on the loader's device (one uint8 batch, repeated)."
    import torch
    from fastai.vision.all import Pipeline
    xb, yb = next(iter(dls.train.new(after_batch=Pipeline([]))))
    dls.train.after_batch((xb, yb))   # warm-up
    t = time.perf_counter()
    for _ in range(5): dls.train.after_batch((xb, yb))
    if dls.device.type == 'cuda': torch.cuda.synchronize()
    return 5 * len(xb) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=192); ap.add_argument('--sizes', type=int, nargs='+', default=list(SIZES))
    ap.add_argument('--rounds', type=int, default=4); ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--aug', default='fastai'); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--fast', action='store_true', help="the decode column with libjpeg-turbo's fast DCT and upsampling")
    ap.add_argument('--draft-factor', type=int, default=1, help="the loader's `draft_factor` (the reference always drafts at 2)")
    ap.add_argument('--prepared', type=int, default=None, help='also time the loader on a copy prepared at this size')
    a = ap.parse_args()
    import torch
    gpu = torch.cuda.is_available()
    print(f'{a.n} JPEG photos (q90) per size, each read {a.rounds}×, {a.size} px, batch {a.bs}, aug {a.aug!r}, '
          f'{cores()} cores, {"GPU: " + torch.cuda.get_device_name() if gpu else "no GPU"}; the reference drafts to >= 2×{a.size} px, '
          f'the loader and the decode column to >= {a.draft_factor}×{a.size} px')
    if not gpu: print('(no GPU: the loader is timed up to the uint8 batch; the batch transforms, which run on the GPU '
                      'where there is one, are timed on their own)')
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        for px in a.sizes:
            w, h = SIZES.get(px, (px, px * 2 // 3))
            root = Path(d) / f'{w}'
            files = make_photos(root / 'img', w, h, a.n)
            dls = loader_dls(write_dataset(root, files), a.size, a.rounds, a.aug, a.bs, a.draft_factor)
            refs, refks, decs, mine = [], [], [], []
            for _ in range(a.repeats):   # alternating, best of each: the fairest reading on a shared machine
                refs.append(reference(files, a.size, a.rounds)); mine.append(loader(dls, batch_tfms=gpu))
                refks.append(reference(files, a.size, a.rounds, a.draft_factor))
                decs.append(reference(files, a.size, a.rounds, a.draft_factor, _decode_part, a.fast))
            (ref, ref_cpu), (refk, refk_cpu), (dec, dec_cpu), (got, got_cpu) = max(refs), max(refks), max(decs), max(mine)
            print(f'{w}×{h}: reference {ref:6.1f} img/s ({ref_cpu:.2f} CPU ms/img) | reference {a.draft_factor}× {refk:6.1f} img/s '
                  f'({refk_cpu:.2f}) | decode {dec:6.1f} img/s ({dec_cpu:.2f}) | aidetect loader {got:6.1f} img/s ({got_cpu:.2f})')
            print(f'    loader ÷ reference = {got / ref:.2f} (by CPU time {ref_cpu / got_cpu:.2f}); loader ÷ reference {a.draft_factor}× = '
                  f'{got / refk:.2f} (by CPU time {refk_cpu / got_cpu:.2f}); decode ÷ reference {a.draft_factor}× = {dec / refk:.2f} '
                  f'(by CPU time {refk_cpu / dec_cpu:.2f})')
            one = one_process(files, a.size, a.repeats, a.draft_factor)
            one['aidetect loader item'] = loader_items(dls, len(files), a.repeats)
            print('    in one process (no pool), CPU ms/img: ' + ', '.join(f'{k} {v:.2f}' for k, v in one.items()) +
                  f"; reference {a.draft_factor}× ÷ decode = {one[f'reference {a.draft_factor}×'] / one['decode']:.2f} "
                  f"({one[f'reference {a.draft_factor}×'] / one['decode --fast']:.2f} with --fast)")
            if gpu:
                g, g_cpu = max(gpu_path(files, a.size, a.rounds, a.bs) for _ in range(a.repeats))
                print(f'    GPU path (nvJPEG, {torch.cuda.get_device_name()}): {g:6.1f} img/s ({g_cpu:.2f} CPU ms/img), '
                      f'{g / ref:.2f}× the reference')
            if not gpu: print(f'    batch transforms ({a.aug}) on this CPU instead of a GPU: {batch_tfms_cost(dls):.0f} img/s alone')
            if a.prepared:
                from aidetect.prepare import prepare_dataset
                small = prepare_dataset(root, Path(d) / f'{w}-prepared', a.prepared, progress=False)
                pdls = loader_dls(Path(d) / f'{w}-prepared', a.size, a.rounds, a.aug, a.bs, a.draft_factor)
                p, p_cpu = max(loader(pdls, gpu) for _ in range(a.repeats))
                print(f'    on a copy prepared at {a.prepared} px ({small["width"].iloc[0]}×{small["height"].iloc[0]}): '
                      f'{p:6.1f} img/s ({p_cpu:.2f} CPU ms/img), {p / got:.1f}× the loader on the originals')
            ratios.append(got / ref)
    print(f'loader ÷ reference: min {min(ratios):.2f} over {len(ratios)} sizes (targets: >= 1.3 at 1500 and 3000 px, >= 1.0 at 500)')


if __name__ == '__main__':
    sys.exit(main())
