"""Pixel-audit speed: images/s of `aidetect.pixels.dataset_pixels` ÷ decoding alone, and the whole `audit(pixels=True)`.

The bench makes a dataset of `--n` images at `--size` px (half real, half AI, one group per pair): JPEG (q90) crops
of scikit-image's sample photos, resized, and for the AI side the same crop JPEG-compressed at q50 first. Then, side
by side on the same files and the same number of threads (`--workers`, default: the cores this process may use):

- reference: decoding only (PIL open, luma, a numpy array), in a thread pool;
- pixels: `dataset_pixels` (decoding and every pixel statistic: residual spectrum, resampling, block grid, DCT);
- audit: `audit(dataset, pixels=True, bootstrap=--bootstrap)`, what `aidetect audit --pixels` runs: metadata, pixel
  statistics, the encoder check and both classifiers with their intervals.

Runs alternate `--repeats` times and the best of each is kept.

    python bench/bench_audit.py [--n 100] [--size 512] [--workers 2] [--repeats 3] [--bootstrap 1000]
"""
import argparse, os, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def make_dataset(out: Path, n: int, size: int) -> Path:
    "A dataset of `n` JPEG images at `size` px: real crops of the sample photos (q90), AI the same crops after q50 (q90)."
    import io
    from PIL import Image
    from aidetect.demo import SAMPLE_PHOTOS, sample_photo_path
    from aidetect.images import open_image
    from aidetect.dataset import DatasetWriter, ai_path, real_path
    rng = np.random.RandomState(0)
    photos = [open_image(sample_photo_path(p)) for d in SAMPLE_PHOTOS.values() for p in d]
    def jpeg(im, q): b = io.BytesIO(); im.save(b, 'JPEG', quality=q); return b.getvalue()
    with DatasetWriter(out) as w:
        for i in range(n // 2):
            im = photos[i % len(photos)]
            c = int(min(im.size) * rng.uniform(0.6, 1.0))
            x, y = rng.randint(0, im.width - c + 1), rng.randint(0, im.height - c + 1)
            tile = im.crop((x, y, x + c, y + c)).resize((size, size), Image.BICUBIC)
            w.write_file(real_path(f'{i}.jpg'), jpeg(tile, 90), dict(label='real', group=str(i), domain='d'))
            again = Image.open(io.BytesIO(jpeg(tile, 50))).convert('RGB')
            w.write_file(ai_path('q50', f'{i}__v0.jpg'), jpeg(again, 90), dict(label='ai', group=str(i), domain='d', generator='q50'))
    return out


def decode_only(files, workers):
    from PIL import Image
    def one(f):
        with Image.open(f) as im: return np.asarray(im.convert('L'), dtype=np.float32).shape
    with ThreadPoolExecutor(workers) as ex: list(ex.map(one, files))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=100)
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--workers', type=int, default=cores())
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--bootstrap', type=int, default=1000)
    a = ap.parse_args()
    import pandas as pd
    from aidetect.audit import audit
    from aidetect.dataset import load_datasets
    from aidetect.pixels import dataset_pixels
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_dataset(Path(tmp) / 'ds', a.n, a.size)
        files = load_datasets(ds)['file']
        best = dict(reference=np.inf, pixels=np.inf, audit=np.inf)
        for _ in range(a.repeats):
            for name, run in (('reference', lambda: decode_only(files, a.workers)),
                              ('pixels', lambda: dataset_pixels(files, a.workers)),
                              ('audit', lambda: audit(ds, bootstrap=a.bootstrap, pixels=True, workers=a.workers))):
                t = time.perf_counter(); out = run(); best[name] = min(best[name], time.perf_counter() - t)
                if name == 'audit': table = out.table
    n = len(files)
    print(f'{n} images at {a.size} px, {a.workers} thread(s), best of {a.repeats}:')
    for name, t in best.items(): print(f'  {name:<9} {n / t:7.1f} img/s  ({t:.2f} s)')
    print(f'pixels ÷ decoding alone: {best["reference"] / best["pixels"]:.2f}')
    print(table[['kind', 'auc', 'auc_low', 'auc_high', 'best_feature']].to_string(index=False))


if __name__ == '__main__':
    main()
