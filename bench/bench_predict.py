"""Prediction throughput: `aidetect predict`'s streaming path (read, decode, resize, forward) ÷ the bare model forward.

Both sides use the same ResNet34 (random weights; speed does not depend on them), the same images (384 px JPEG crops
of scikit-image's photos) and the same batches at 224 px on the CPU. The bare side gets the batches already
decoded and stacked in memory. Target: ratio >= 0.8.

    python bench/bench_predict.py [--n 128] [--bs 32]
"""
import argparse, os, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import make_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=128); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--size', type=int, default=224); ap.add_argument('--workers', type=int, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d: run(Path(d), a)


def run(root: Path, a):
    "Make the images under `root`, then time both sides on them."
    from aidetect.train import build_model, norm_stats
    from aidetect.detector import Detector, detector_pipeline, predict_files
    make_dataset(root, a.n)
    files = sorted(str(p) for p in (root / 'img').glob('*.jpg'))
    det = Detector(build_model('resnet34'), detector_pipeline('none', a.size), *norm_stats('resnet34'), device='cpu')
    batches = [torch.stack([det.prepare_file(f) for f in files[i:i + a.bs]]) for i in range(0, len(files), a.bs)]
    det.predict_batch(batches[0])                                           # warm-up
    t = time.perf_counter()
    for x in batches: det.predict_batch(x)
    bare = len(files) / (time.perf_counter() - t)
    t = time.perf_counter()
    n = sum(1 for _ in predict_files(det, files, bs=a.bs, num_workers=a.workers))
    stream = n / (time.perf_counter() - t)
    print(f'resnet34 @ {a.size}px, {len(files)} images, batch {a.bs}, {torch.get_num_threads()} torch threads, '
          f'{os.cpu_count()} CPUs')
    print(f'  bare forward on ready batches: {bare:6.1f} img/s')
    print(f'  predict (files -> P(AI)):      {stream:6.1f} img/s')
    print(f'  ratio predict / bare forward = {stream / bare:.2f} (target >= 0.8)')


if __name__ == '__main__':
    sys.exit(main())
