"""Generator overhead: `aidetect-gen variations` per-image time ÷ the same pipeline called directly.

Both sides use the tiny preset on the CPU, the same source images, batch size, size and steps. The direct side gets
its images already decoded and keeps its outputs in memory; the generator side reads, decodes, prepares, generates,
resizes, encodes, hashes, writes files and manifest rows. Runs alternate, and the median of the per-pair ratios is
reported. Target: <= 1.03.

    python bench/bench_generator.py [--images 48] [--batch-size 8] [--steps 25] [--repeats 3]
"""
import argparse, os, shutil, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=48)
    ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--steps', type=int, default=25)
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    from aidetect.gen.backends import SDBackend
    from aidetect.gen.run import VariationJob, run_variations
    tmp = Path(tempfile.mkdtemp())
    src = tmp / 'src'
    rng = np.random.RandomState(0)
    for i in range(a.images):
        (src / f'c{i % 4}').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.randint(0, 256, (a.size, a.size, 3), dtype=np.uint8)).save(src / f'c{i % 4}' / f'{i:03d}.jpg', quality=90)
    b = SDBackend('tiny', steps=a.steps)
    pipe = b.pipe
    images = [Image.open(p).convert('RGB') for p in sorted(src.rglob('*.jpg'))]

    def direct():
        t = time.perf_counter()
        for i in range(0, len(images), a.batch_size):
            batch = images[i:i + a.batch_size]
            pipe(batch, height=a.size, width=a.size, num_inference_steps=a.steps, guidance_scale=b.guidance,
                 generator=[torch.Generator().manual_seed(j) for j in range(len(batch))])
        return (time.perf_counter() - t) / len(images)

    def generator(k):
        out = tmp / f'out{k}'
        t = time.perf_counter()
        s = run_variations(VariationJob(src=str(src), out=str(out), batch_size=a.batch_size, size=a.size), b,
                           progress=False, log=lambda m: None)
        dt = (time.perf_counter() - t) / len(images)
        assert s.done == len(images)
        shutil.rmtree(out)
        return dt

    direct(); generator('warm')   # warm-up: first calls allocate
    ratios, ds, gs = [], [], []
    for k in range(a.repeats):
        d, g = direct(), generator(k)
        ds.append(d); gs.append(g); ratios.append(g / d)
        print(f'pair {k}: direct {d * 1000:.1f} ms/img, aidetect-gen {g * 1000:.1f} ms/img, ratio {g / d:.3f}')
    print(f'\ngenerator overhead (tiny, CPU, {a.images} images, batch {a.batch_size}, {a.steps} steps, {a.size}px, '
          f'{torch.get_num_threads()} torch threads): median ratio {statistics.median(ratios):.3f} (target <= 1.03)')
    shutil.rmtree(tmp)


if __name__ == '__main__':
    sys.exit(main())
