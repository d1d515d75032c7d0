"""Training loader headroom and memory.

1. Loader headroom: images/s of the training DataLoader alone (decode, item transforms, batch transforms with
   augmentation) ÷ images/s of the model's forward+backward on ready tensors, same arch, size and batch, measured
   side by side in one run, at 224 px and at 64 px. Above 1, the loader keeps up with the model.
2. Memory: peak RSS of one training epoch (64 px) on N and on 10×N images, each in a fresh process. Images stream
   from disk, so the growth should be small (< 200 MB).

The images are crops of scikit-image's sample photos (384 px JPEGs, like a typical photo dataset at reduced size);
half are labelled 'ai' so that the manifest has both classes (the loader's work does not depend on the label).

    python bench/bench_training.py [--arch resnet34] [--bs 32] [--batches 6] [--n 64]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np


def make_dataset(root: Path, n: int, px: int = 384):
    "n JPEG files cut from scikit-image's photos, with a manifest (half labelled ai)."
    from PIL import Image
    from aidetect.demo import SAMPLE_PHOTOS, sample_photo_path
    from aidetect.images import open_image
    from aidetect.dataset import write_manifest, file_facts
    photos = [open_image(sample_photo_path(p)) for d in SAMPLE_PHOTOS.values() for p in d]
    rng, rows = np.random.RandomState(0), []
    for i in range(n):
        im = photos[i % len(photos)]
        s = min(px, *im.size); x, y = rng.randint(0, im.width - s + 1), rng.randint(0, im.height - s + 1)
        rel = f'img/{i:05d}.jpg'
        (root / 'img').mkdir(parents=True, exist_ok=True)
        im.crop((x, y, x + s, y + s)).resize((px, px)).save(root / rel, quality=90)
        rows.append(dict(path=rel, label='ai' if i % 2 else 'real', group=f'g{i // 2}', domain='bench',
                         **file_facts(root / rel)))
    write_manifest(rows, root)


def headroom(root, arch, size, bs, batches):
    import torch
    from aidetect.data import detector_dls
    from aidetect.train import detector_learner
    dls = detector_dls(root, size=size, bs=bs, aug='fastai', arch=arch, verbose=False)
    learn = detector_learner(dls, arch, pretrained=False)
    it = iter(dls.train); next(it)                          # warm-up: first batch builds the workers and caches
    t = time.perf_counter(); n = 0
    for _ in range(batches):
        try: xb, yb = next(it)
        except StopIteration: it = iter(dls.train); xb, yb = next(it)
        n += len(xb)
    loader = n / (time.perf_counter() - t)
    model, opt = learn.model.train(), torch.optim.SGD(learn.model.parameters(), lr=1e-3)
    x, y = xb.as_subclass(torch.Tensor).clone(), yb.as_subclass(torch.Tensor).clone()
    loss = learn.loss_func(model(x), y); loss.backward(); opt.step(); opt.zero_grad()   # warm-up
    t = time.perf_counter()
    for _ in range(batches):
        loss = learn.loss_func(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
    fwdbwd = batches * len(x) / (time.perf_counter() - t)
    return loader, fwdbwd


def memory_child(root, arch):
    "Train one epoch in this process and print its peak RSS in MB."
    from aidetect.train import train_detector
    train_detector(root, arch, epochs=1, freeze_epochs=0, size=64, bs=32, lr=1e-3, pretrained=False, aug='none',
                   verbose=False, workers=0)
    # VmHWM, not ru_maxrss: the latter survives exec and would count the (large) parent at fork time
    hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))
    print(json.dumps(dict(peak_rss_mb=int(hwm.split()[1]) / 1024)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='resnet34'); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--batches', type=int, default=6); ap.add_argument('--n', type=int, default=64)
    ap.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child: return memory_child(a.memory_child, a.arch)
    with tempfile.TemporaryDirectory() as d: run(Path(d), a)


def run(tmp: Path, a):
    "Headroom at 224 and 64 px, then peak RSS at N and 10×N images; datasets are made under `tmp`."
    import torch
    make_dataset(tmp / 'head', max(256, a.bs * (a.batches + 2)))
    print(f'loader headroom ({a.arch}, batch {a.bs}, fastai augmentation, {torch.get_num_threads()} torch threads, '
          f'{os.cpu_count()} CPUs):')
    for size in (224, 64):
        loader, model = headroom(tmp / 'head', a.arch, size, a.bs, a.batches)
        print(f'  {size:>3} px: loader {loader:7.1f} img/s, forward+backward {model:7.1f} img/s, '
              f'loader/model = {loader / model:.2f}')
    print(f'\npeak RSS, one epoch at 64 px ({a.arch}, fresh process each):')
    peaks = {}
    for n in (a.n, 10 * a.n):
        make_dataset(tmp / f'mem{n}', n)
        r = subprocess.run([sys.executable, __file__, '--memory-child', str(tmp / f'mem{n}'), '--arch', a.arch],
                           capture_output=True, text=True, check=True)
        peaks[n] = json.loads(r.stdout.strip().splitlines()[-1])['peak_rss_mb']
        print(f'  {n:>5} images: {peaks[n]:7.0f} MB')
    print(f'  growth from {a.n} to {10 * a.n} images: {peaks[10 * a.n] - peaks[a.n]:+.0f} MB (target < 200 MB)')


if __name__ == '__main__':
    sys.exit(main())
