"""Which size policy leaks least? Real vs `identity` (the null generator) datasets made under each policy from the same
mixed-size JPEG photos, scored by a small pixel-feature classifier (group-fold cross-validated ROC AUC): 0.5 means the
pipeline leaves nothing in the pixels that tells the classes apart.

    python bench/measure_size_policy.py [--photos 60] [--size 128] [--policies crop,matched]

The photos are random crops of scikit-image's bundled photographs (no download), some smaller than the generation
size (0.6-1x), most 1.25-3x bigger, saved as JPEG at quality 75-95 (4:2:0). The features are cheap and documented:
noise-residual energy in four radial frequency bands, a resampling-periodicity score (the peak-to-median ratio of the
residual's spectrum), JPEG blockiness at the 8 px grid, and sharpness (variance of the Laplacian).
"""
import argparse, io, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image


def photos(folder: Path, n: int, size: int, seed: int = 0):
    "`n` JPEG photos in `folder`: random crops of scikit-image's photographs, long side 0.6-1x or 1.25-3x `size`."
    import skimage.data as d
    srcs = [Image.fromarray(getattr(d, k)()[..., :3]) for k in
            ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina')]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = srcs[i % len(srcs)]
        f = rng.uniform(0.6, 1.0) if i % 4 == 0 else rng.uniform(1.25, 3.0)   # a quarter smaller than the native size
        long = int(size * f)
        aspect = rng.uniform(0.6, 1.0)
        w, h = (long, max(16, int(long * aspect))) if i % 2 else (max(16, int(long * aspect)), long)
        w, h = min(w, im.width), min(h, im.height)
        x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
        im.crop((x, y, x + w, y + h)).save(folder / f'{i:03d}.jpg', quality=int(rng.integers(75, 96)), subsampling=2)


def features(path) -> np.ndarray:
    "Pixel statistics of one image: residual band energies, resampling periodicity, blockiness, sharpness."
    y = np.asarray(Image.open(path).convert('L'), dtype=np.float64)
    res = y[1:-1, 1:-1] * 4 - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]   # Laplacian residual
    F = np.abs(np.fft.fftshift(np.fft.fft2(res - res.mean()))) ** 2
    h, w = F.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    bands = [np.log(F[(r >= a) & (r < b)].mean() + 1e-9) for a, b in ((0, .25), (.25, .5), (.5, .75), (.75, 1.01))]
    periodic = np.log(F[r > .1].max() / (np.median(F[r > .1]) + 1e-9))
    dx = np.abs(np.diff(y, axis=1))
    cols = np.arange(dx.shape[1])
    block = np.log((dx[:, cols % 8 == 7].mean() + 1e-6) / (dx[:, cols % 8 != 7].mean() + 1e-6))
    return np.array(bands + [periodic, block, np.log(res.var() + 1e-9)])


def pixel_auc(dataset, folds: int = 5, seed: int = 0) -> tuple:
    "(group-fold ROC AUC of a logistic regression on `features`, bootstrap 95% interval, n images)."
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from aidetect.dataset import read_manifest
    m = read_manifest(dataset)
    X = np.stack([features(Path(dataset) / p) for p in m.path])
    yv, groups = (m.label == 'ai').to_numpy(int), m.group.to_numpy()
    p = np.zeros(len(yv))
    for tr, te in GroupKFold(folds).split(X, yv, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[tr], yv[tr])
        p[te] = clf.predict_proba(X[te])[:, 1]
    rng, boots = np.random.default_rng(seed), []
    ug = np.unique(groups)
    for _ in range(500):   # resample groups, not rows
        pick = np.concatenate([np.flatnonzero(groups == g) for g in rng.choice(ug, len(ug))])
        if len(set(yv[pick])) == 2: boots.append(roc_auc_score(yv[pick], p[pick]))
    return roc_auc_score(yv, p), np.percentile(boots, 2.5), np.percentile(boots, 97.5), len(yv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--photos', type=int, default=60)
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--policies', default='crop,matched')
    a = ap.parse_args()
    from aidetect.gen.run import VariationJob, run_variations
    from aidetect.gen.zoo.load import load_generator
    from aidetect.dataset import read_manifest
    tmp = Path(tempfile.mkdtemp())
    photos(tmp / 'photos', a.photos, a.size)
    print(f'{a.photos} JPEG photos, generation size {a.size} px; real vs identity, pixel-feature classifier, 5 group folds')
    for policy in a.policies.split(','):
        t = time.time()
        out = tmp / policy
        run_variations(VariationJob(str(tmp / 'photos'), str(out), size=a.size, size_policy=policy),
                       load_generator('identity', device='cpu'), progress=False, log=lambda m: None)
        auc, lo, hi, n = pixel_auc(out)
        how = read_manifest(out).groupby('label')['resample'].agg(lambda s: ', '.join(f'{k} {v}' for k, v in s.value_counts().items()))
        print(f'{policy:8s} pixel AUC {auc:.3f} [{lo:.3f}, {hi:.3f}] on {n} images ({time.time() - t:.1f}s); '
              f"real: {how.get('real', '')}; identity: {how.get('ai', '')}")


if __name__ == '__main__': main()
