"""The fast image path agrees with a plain full decode; training checks its files first and lists what it left out."""
import json, shutil
import numpy as np
import pytest
from PIL import Image
from fastai.vision.all import Pipeline, PILImage, Resize, ResizeMethod, ToTensor
from conftest import run_cli
from aidetect.demo import SAMPLE_PHOTOS, example_detector, sample_photo_path
from aidetect.images import open_image
from aidetect.detector import load_detector, predict_files
from aidetect.dataset import read_manifest

# The bounds this test holds the fast path to, against the path it replaced (a full decode and fastai's PIL `Resize`,
# crop method): the uint8 input pixels, and P(AI) of the example detector. That detector works at 32 px and was
# trained on textures (photo crops against a random generator's noise), so it is the most sensitive to the
# pre-filter (a block average, then bilinear, instead of bilinear alone): on all eight sample photos at 1×, 3× and
# 6× (reductions up to 120 times) P(AI) moved by 0.037 at most (0.008 on average).
MAX_PROB_DIFF = 0.05
MAX_MEAN_PIXEL_DIFF = 2.0   # levels of 255, averaged over an input
MAX_FORMAT_PROB_DIFF = 0.01   # a JPEG and a PNG of one photo (measured 0.005)
# `open_image(fast=True)`, libjpeg-turbo's fast DCT and upsampling, against its default (PIL's pixels), on the same
# photos and detector, decoded at full scale (the worst case): the 32 px input moved by 0.88 levels at most (0.75 on
# average), P(AI) by 0.010 at most (0.005 on average); at 1/4 and 1/8 scale nothing moves.
MAX_FAST_MEAN_PIXEL_DIFF, MAX_FAST_PROB_DIFF = 1.5, 0.03


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    "Five of scikit-image's sample photos as JPEGs (q90), at their size and 3× larger: 300 to 1900 px."
    d = tmp_path_factory.mktemp('photos')
    out = []
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'gravel'):
        im = open_image(sample_photo_path(name))
        for k in (1, 3):
            f = d / f'{name}-{k}.jpg'
            im.resize((im.width * k, im.height * k), Image.BICUBIC).save(f, quality=90)
            out.append(f)
    return out


def _plain(det, f):
    "What the detector's input was before the fast path: full decode, fastai's PIL Resize, ToTensor."
    size = det.info['size']
    return Pipeline([Resize(size, method=ResizeMethod.Crop), ToTensor()], split_idx=1)(PILImage(open_image(f)))


def test_fast_path_agrees_with_a_full_decode(photos):
    det = load_detector(example_detector())
    assert det.draft == (2 * det.info['size'],) * 2          # reduced-scale decoding is on for this recipe
    fast = np.stack([det.prepare_file(f).numpy() for f in photos]).astype(float)
    plain = np.stack([_plain(det, f).numpy() for f in photos]).astype(float)
    decoded = [open_image(f, draft=det.draft).size for f in photos]
    assert min(w for w, _ in decoded) < max(Image.open(f).width for f in photos) / 4   # 1/8 scale was used
    pixel = np.abs(fast - plain).mean(axis=(1, 2, 3))
    assert pixel.max() < MAX_MEAN_PIXEL_DIFF, pixel
    import torch
    p_fast = det.predict_batch(torch.from_numpy(fast).to(torch.uint8))
    p_plain = det.predict_batch(torch.from_numpy(plain).to(torch.uint8))
    assert np.abs(p_fast - p_plain).max() < MAX_PROB_DIFF, (p_fast, p_plain)
    assert np.ptp(p_plain) > 0.05                            # the model's answer moves with the image: not a constant
    got = dict((i, p) for i, p, _ in predict_files(det, photos))   # and predict_files is that fast path
    np.testing.assert_allclose([got[i] for i in range(len(photos))], p_fast, atol=1e-5)


def test_libjpeg_turbos_fast_modes_move_predictions_little(photos):
    "`open_image(fast=True)` (fast DCT and upsampling) against the default, in the detector's input and its P(AI)."
    import torch
    det = load_detector(example_detector())
    # at full scale: at the 1/4 and 1/8 scales det.draft picks for these photos the fast modes change no pixel at all
    # (libjpeg-turbo's scaled IDCTs have no fast variant), which the first line checks
    assert all(np.array_equal(open_image(f, draft=det.draft), open_image(f, draft=det.draft, fast=True)) for f in photos)
    full = [Image.open(f).size for f in photos]
    exact = torch.stack([det.prepare(open_image(f, draft=d)) for f, d in zip(photos, full)])
    fast = torch.stack([det.prepare(open_image(f, draft=d, fast=True)) for f, d in zip(photos, full)])
    pixel = (exact.float() - fast.float()).abs().mean(dim=(1, 2, 3))
    assert pixel.max() < MAX_FAST_MEAN_PIXEL_DIFF and pixel.max() > 0, pixel   # > 0: the fast modes were on
    p = det.predict_batch(exact) - det.predict_batch(fast)
    assert np.abs(p).max() < MAX_FAST_PROB_DIFF, p


def test_a_png_and_a_jpeg_of_one_photo_are_shrunk_alike(photos, tmp_path):
    "libjpeg's scaled decoding for JPEGs, block averages for the rest: the format leaves no trace in the input."
    import torch
    det = load_detector(example_detector())
    pairs = []
    for f in photos:
        im = Image.open(f)
        im.save(tmp_path / 'x.jpg', quality=100, subsampling=0); im.save(tmp_path / 'x.png', compress_level=1)
        pairs += [det.prepare_file(tmp_path / 'x.jpg'), det.prepare_file(tmp_path / 'x.png')]
    p = det.predict_batch(torch.stack(pairs))
    assert np.abs(p[0::2] - p[1::2]).max() < MAX_FORMAT_PROB_DIFF


@pytest.fixture
def flawed(demo_data, tmp_path):
    "scenes-train with a truncated JPEG, a missing file and a text file named like an image."
    d = tmp_path / 'flawed'
    shutil.copytree(demo_data['scenes-train'], d)
    paths = read_manifest(d)['path'].tolist()
    jpg = next(p for p in paths if p.endswith('.jpg'))
    (d / jpg).write_bytes((d / jpg).read_bytes()[:400])
    missing, text = [p for p in paths if p != jpg][:2]
    (d / missing).unlink()
    (d / text).write_text('not an image')
    return d, {jpg: 'truncated', missing: 'missing', text: 'not-an-image'}


def test_training_leaves_out_unusable_files_and_lists_them(flawed, tmp_path):
    d, bad = flawed
    p = run_cli('aidetect', 'train', d, '--out', tmp_path / 'm', '--no-pretrained', '--size', '32', '--bs', '8',
                '--epochs', '1', '--lr', '1e-3', '--aug', 'none', check=0)
    assert 'left out 3 unusable file(s)' in p.stdout
    for path in bad: assert path in p.stdout
    info = json.loads((tmp_path / 'm.json').read_text())
    assert {e['path']: e['reason'].split(':')[0] for e in info['excluded']} == bad
    assert {e['dataset'] for e in info['excluded']} == {'flawed'}
    assert info['n_train'] + info['n_valid'] == len(read_manifest(d)) - 3


def test_strict_training_refuses_with_one_line(flawed, tmp_path):
    d, _ = flawed
    p = run_cli('aidetect', 'train', d, '--out', tmp_path / 'm', '--no-pretrained', '--size', '32', '--strict')
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith('aidetect: error:')]
    assert len(err) == 1 and '3 file(s) of the training data cannot be used' in err[0] and 'without --strict' in err[0]
    assert not (tmp_path / 'm.json').exists()
