"""Prediction throughput: `predict_files` (what `aidetect predict` and `aidetect eval` run) ÷ a plain reference.

For each photo size, on the same JPEG photos (q90, made as in `bench_loader.py`), the same ResNet34 (random weights:
speed does not depend on them), the same batches at 224 px and the same device:

- reference: the plain PIL decode of `bench_loader.py` (draft to >= 2×224 px, centre square, resize; one process
  per core), then the bare model forward on the batches already stacked in memory; its time is the sum of the two;
- aidetect: `predict_files(det, files)`: decoding in DataLoader workers while the model runs, P(AI) per file; the
  detector drafts to >= `--draft-factor`×224 px (default 1, what models trained since the factor became a setting
  store; 2: models saved before), the reference always to >= 2×224 px.

Beside them, the decode alone both ways: PIL's (the reference's) and aidetect's (`open_image` with `draft` at the
detector's factor: libjpeg-turbo for JPEGs), on the same cores, so the share of the decoder in the difference shows.

Target: ratio >= 0.8. On a CPU the forward pass dominates both sides; the ratio says most where there is a GPU.

    python bench/bench_predict.py [--n 256] [--bs 32] [--sizes 500 1500 3000] [--draft-factor 1]
"""
import argparse, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_loader import SIZES, _decode_part, cores, make_photos, reference


def ready_batches(files: list, size: int, bs: int) -> list:
    "The reference's uint8 N×C×H×W batches, decoded the plain way (not timed)."
    from PIL import Image
    out = []
    for f in files:
        im = Image.open(f); im.draft('RGB', (2 * size, 2 * size)); im = im.convert('RGB')
        s = min(im.size); l, t = (im.width - s) // 2, (im.height - s) // 2
        out.append(torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR, box=(l, t, l + s, t + s))).copy()))
    return [torch.stack(out[i:i + bs]).permute(0, 3, 1, 2) for i in range(0, len(out), bs)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=256); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--size', type=int, default=224); ap.add_argument('--sizes', type=int, nargs='+', default=list(SIZES))
    ap.add_argument('--workers', type=int, default=None)
    ap.add_argument('--draft-factor', type=int, default=1, help="the detector's draft factor (the reference drafts at 2)")
    a = ap.parse_args()
    from aidetect.model import build_model, norm_stats
    from aidetect.detector import Detector, detector_pipeline, predict_files
    from aidetect.model import draft_size
    det = Detector(build_model('resnet34'), detector_pipeline('none', a.size), *norm_stats('resnet34'),
                   draft=draft_size('none', a.size, factor=a.draft_factor))
    sync = torch.cuda.synchronize if det.device.type == 'cuda' else (lambda: None)
    print(f'resnet34 @ {a.size}px on {det.device} ({det.precision} precision), {a.n} JPEG photos per size, batch {a.bs}, '
          f'{torch.get_num_threads()} torch threads, {cores()} cores; the reference drafts to >= 2×{a.size} px, '
          f'aidetect to >= {a.draft_factor}×{a.size} px')
    with tempfile.TemporaryDirectory() as d:
        for px in a.sizes:
            w, h = SIZES.get(px, (px, px * 2 // 3))
            files = make_photos(Path(d) / f'{w}', w, h, a.n)
            batches = ready_batches(files, a.size, a.bs)
            det.predict_batch(batches[0]); sync()                               # warm-up
            decode, decode_cpu = reference(files, a.size, 1)
            mine, mine_cpu = reference(files, a.size, 1, a.draft_factor, _decode_part, False)
            t = time.perf_counter()
            for x in batches: det.predict_batch(x)
            sync(); fwd = a.n / (time.perf_counter() - t)
            ref = 1 / (1 / decode + 1 / fwd)
            t = time.perf_counter()
            n = sum(1 for _ in predict_files(det, files, bs=a.bs, num_workers=a.workers))
            sync(); got = n / (time.perf_counter() - t)
            print(f'{w}×{h}: predict {got:6.1f} img/s; reference: decode {decode:6.1f} img/s + bare forward {fwd:6.1f} img/s '
                  f'= {ref:6.1f} img/s; predict ÷ reference = {got / ref:.2f} (target >= 0.8); decode alone: PIL {decode:6.1f} '
                  f'img/s ({decode_cpu:.2f} CPU ms/img), aidetect {mine:6.1f} img/s ({mine_cpu:.2f})', flush=True)


if __name__ == '__main__':
    sys.exit(main())
