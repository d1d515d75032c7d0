"""Robustness sweep throughput: images/s of `aidetect robustness` (each image decoded once, perturbed in memory) ÷
images/s of plain `evaluate`, on the same images, detector and cores, per perturbation.

The images are 384 px JPEG crops of scikit-image's photos (half labelled ai; `bench_training.make_dataset`); the
detector is a ResNet34 with random weights (speed does not depend on them) at each `--sizes` input size. For each
perturbation, `robustness(..., perturb=NAME)` runs its default levels and the clean baseline that is always
included; its images/s is the images it predicts (images × (1 + levels)) over its wall time, the file check
(`preflight`) included. The reference is `evaluate` on the same dataset, timed right beside it; each side is run
`--repeats` times, interleaved, and its fastest run counts (the machine may be shared). The last column is the same
ratio in images per CPU-second of this process (all its threads), which a busy machine disturbs less. Small input
sizes are the hard
case: the smaller the model's input, the larger the share of the time spent perturbing. Target: ratio >= 0.5 for
every perturbation that is not an attack. With `--attacks`, FGSM and PGD at ε = 4/255 are timed too, for information
(an attack costs a backward pass per step; PGD takes 10).

    python bench/bench_robustness.py [--n 64] [--sizes 32,64] [--bs 32] [--repeats 3] [--attacks]
"""
import argparse, os, sys, tempfile, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import make_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=64); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--sizes', default='32,64'); ap.add_argument('--attacks', action='store_true')
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d: run(Path(d), a)


def run(root: Path, a):
    "Make the images under `root`, then time both sides on them at each size."
    from aidetect.model import build_model, norm_stats
    from aidetect.detector import Detector, detector_pipeline
    from aidetect.evaluate import evaluate
    from aidetect.robustness import PERTURBATIONS, robustness
    warnings.simplefilter('ignore')
    make_dataset(root, a.n)
    names = [n for n, p in PERTURBATIONS.items() if not p.adversarial] + (['fgsm:4', 'pgd:4'] if a.attacks else [])
    print(f'{a.n} images (384 px JPEG), batch {a.bs}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs')
    for size in map(int, a.sizes.split(',')):
        det = Detector(build_model('resnet34'), detector_pipeline('none', size), *norm_stats('resnet34'), device='cpu')
        evaluate(det, [root], bs=a.bs, progress=False, bootstrap=0)                      # warm-up
        print(f'\nresnet34 @ {size} px')
        print(f"  {'perturbation':<12} {'levels':>6} {'sweep img/s':>12} {'eval img/s':>11} {'ratio':>6} {'cpu ratio':>9}")
        worst = float('inf')
        for name in names:
            ev, sw, ev_cpu, sw_cpu = [], [], [], []
            for _ in range(a.repeats):
                t, c = time.perf_counter(), time.process_time()
                evaluate(det, [root], bs=a.bs, progress=False, bootstrap=0)
                ev.append(time.perf_counter() - t); ev_cpu.append(time.process_time() - c)
                t, c = time.perf_counter(), time.process_time()
                res = robustness(det, [root], perturb=name, bs=a.bs, bootstrap=0, progress=False)
                sw.append(time.perf_counter() - t); sw_cpu.append(time.process_time() - c)
            levels = max(1, res.preds['level'].nunique())            # grayscale has none: one pass
            work = a.n * (1 + levels)                                # an attack pass attacks each image once
            ips, ref = work / min(sw), a.n / min(ev)
            cpu = (work / min(sw_cpu)) / (a.n / min(ev_cpu))
            if ':' not in name: worst = min(worst, ips / ref)
            print(f'  {name:<12} {levels:>6} {ips:12.1f} {ref:11.1f} {ips / ref:6.2f} {cpu:9.2f}')
        print(f'  lowest ratio of the perturbations: {worst:.2f} (target >= 0.5)')


if __name__ == '__main__':
    sys.exit(main())
