"""The fast image path agrees with a plain full decode; training checks its files first and lists what it left out."""
import json, random, shutil
import numpy as np
import pytest
from PIL import Image
from fastai.vision.all import Pipeline, PILImage, Resize, ResizeMethod, ToTensor
from conftest import run_cli
from aidetect.demo import SAMPLE_PHOTOS, example_detector, sample_photo_path
from aidetect.images import open_image
from aidetect.detector import load_detector, predict_files
from aidetect.dataset import read_manifest
from aidetect.model import CropResize, draft_size
import torch

# The bounds this test holds the fast path to, against the path it replaced (a full decode and fastai's PIL `Resize`,
# crop method): the uint8 input pixels, and P(AI) of the example detector. That detector works at 32 px and was
# trained on textures (photo crops against a random generator's noise), so it is the most sensitive to the
# pre-filter (a block average, then bilinear, instead of bilinear alone). Per draft factor (`draft_size`'s: decode
# at the smallest libjpeg scale >= factor × the input size), measured on all eight sample photos at 1×, 3× and 6×
# (24 JPEGs, q90, 451 to 6000 px; reductions up to 120 times) against a full decode crop-resized alike, by
# `python tests/test_fast_path.py` (against fastai's PIL `Resize`, as the test does, factor 2 measured 0.037):
# - factor 2 (models saved before the factor was a setting; the cached example detector was trained so): input
#   pixels 1.73 levels at most (0.65 on average), P(AI) 0.028 at most (0.007 on average);
# - factor 1 (training's default since): input pixels 5.09 at most (0.98 on average), P(AI) 0.123 at most (0.013 on
#   average), read by that factor-2 detector. The photos whose scale differs from factor 2's are the two smallest
#   (coffee and chelsea at 1×: 600×400 and 451×300 decoded at 1/8, a 50 and 38 px short side resized to 32, where
#   8×8 block means alias); every other photo decodes at the same scale as with factor 2 (the 1/8 floor) and reads
#   identically. At 224 px (pixels only) on the same photos: 3.19 at most (1.03 on average) for factor 1, 0.86 (0.20)
#   for factor 2. A model keeps the factor it was trained with (its JSON), so this is the cost of reading a model
#   with the other factor, not a difference between training and use.
MAX_PROB_DIFF = {2: 0.05, 1: 0.15}
MAX_MEAN_PIXEL_DIFF = {2: 2.0, 1: 6.0}   # levels of 255, averaged over an input
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


@pytest.mark.parametrize('factor', [2, 1])
def test_fast_path_agrees_with_a_full_decode(photos, factor):
    det = load_detector(example_detector())
    assert det.draft is not None                             # reduced-scale decoding is on for this recipe
    det.draft = draft_size(det.info['aug'], det.info['size'], factor=factor)
    fast = np.stack([det.prepare_file(f).numpy() for f in photos]).astype(float)
    plain = np.stack([_plain(det, f).numpy() for f in photos]).astype(float)
    decoded = [open_image(f, draft=det.draft).size for f in photos]
    assert min(w for w, _ in decoded) < max(Image.open(f).width for f in photos) / 4   # 1/8 scale was used
    pixel = np.abs(fast - plain).mean(axis=(1, 2, 3))
    assert pixel.max() < MAX_MEAN_PIXEL_DIFF[factor], pixel
    assert pixel.max() > 0.1                                 # positive control: the pre-filter does show
    import torch
    p_fast = det.predict_batch(torch.from_numpy(fast).to(torch.uint8))
    p_plain = det.predict_batch(torch.from_numpy(plain).to(torch.uint8))
    assert np.abs(p_fast - p_plain).max() < MAX_PROB_DIFF[factor], (p_fast, p_plain)
    assert np.ptp(p_plain) > 0.05                            # the model's answer moves with the image: not a constant
    got = dict((i, p) for i, p, _ in predict_files(det, photos))   # and predict_files is that fast path
    np.testing.assert_allclose([got[i] for i in range(len(photos))], p_fast, atol=1e-5)


def test_a_model_reads_images_with_the_draft_factor_it_was_trained_with(tmp_path):
    "The factor is a setting in the model's JSON; a model saved before it was one keeps the 2× rule."
    src = example_detector()
    info = json.loads(src.read_text())
    size = info['size']
    for factor, want in ((1, size), (2, 2 * size), (None, 2 * size)):
        d = tmp_path / f'f{factor}'; d.mkdir()
        shutil.copy(src.with_suffix('.safetensors'), d / 'm.safetensors')
        settings = {k: v for k, v in info.get('settings', {}).items() if k != 'draft_factor'}
        if factor is not None: settings['draft_factor'] = factor
        (d / 'm.json').write_text(json.dumps(dict(info, settings=settings)))
        assert load_detector(d / 'm.json').draft == (want, want), factor


def test_the_loaders_uint8_path_gives_the_pil_paths_pixels(photos, tmp_path):
    "The training loader's item without a PIL image (`DetectorTensor`) = with one = the predictor's input, per factor."
    from fastai.vision.all import Pipeline
    from aidetect.data import OpenImage, DetectorTensor, DetectorImage
    det = load_detector(example_detector())
    size = det.info['size']
    Image.open(photos[0]).rotate(90, expand=True).save(tmp_path / 'x.png')   # and a file that is not a JPEG
    ex = Image.open(photos[1]).getexif(); ex[0x0112] = 6                    # and one stored sideways
    Image.open(photos[1]).save(tmp_path / 'r.jpg', quality=90, exif=ex.tobytes())
    for factor in (1, 2):
        det.draft = draft_size('none', size, factor=factor)
        for f in [*photos, tmp_path / 'x.png', tmp_path / 'r.jpg']:
            for split in (0, 1):   # a random crop in training: the same random state on both sides
                x = {}
                for tensors in (True, False):
                    open_, resize = OpenImage('none', size, factor, tensors), CropResize(size)
                    random.seed(split); x[tensors] = Pipeline([open_, resize], split_idx=split)(str(f))
                assert type(open_(str(f), split_idx=split)) is (DetectorTensor if tensors else DetectorImage)
                assert x[True].dtype == torch.uint8 and torch.equal(x[True], x[False]), (f, factor, split)
            assert torch.equal(x[True].as_subclass(torch.Tensor), det.prepare_file(f)), (f, factor)


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
    assert info['settings']['draft_factor'] == 1   # training's default, stored for `load_detector`


def test_strict_training_refuses_with_one_line(flawed, tmp_path):
    d, _ = flawed
    p = run_cli('aidetect', 'train', d, '--out', tmp_path / 'm', '--no-pretrained', '--size', '32', '--strict')
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith('aidetect: error:')]
    assert len(err) == 1 and '3 file(s) of the training data cannot be used' in err[0] and 'without --strict' in err[0]
    assert not (tmp_path / 'm.json').exists()


def measure(sizes=(32, 224)):
    "The numbers in the comment at the top: every sample photo at 1×, 3×, 6×, each draft factor against a full decode."
    import tempfile
    from pathlib import Path
    from aidetect.demo import SAMPLE_PHOTOS
    from aidetect.images import open_pixels
    from aidetect.model import pixels_tensor
    det, d = load_detector(example_detector()), Path(tempfile.mkdtemp())
    files = []
    for name in [p for v in SAMPLE_PHOTOS.values() for p in v]:
        im = open_image(sample_photo_path(name))
        for k in (1, 3, 6):
            files.append(d / f'{name}-{k}.jpg')
            im.resize((im.width * k, im.height * k), Image.BICUBIC).save(files[-1], quality=90)
    for size in sizes:
        prep = lambda f, draft: CropResize(size)(pixels_tensor(open_pixels(f, draft=draft)), split_idx=1).as_subclass(torch.Tensor)
        full = torch.stack([prep(f, None) for f in files])
        for factor in (2, 1):
            x = torch.stack([prep(f, (factor * size,) * 2) for f in files])
            px = (x.float() - full.float()).abs().mean(dim=(1, 2, 3))
            line = f'{size} px, factor {factor} vs a full decode: input pixels {px.max():.2f} at most ({px.mean():.2f} on average)'
            if size == det.info['size']:
                p = np.abs(det.predict_batch(x) - det.predict_batch(full))
                line += f', P(AI) {p.max():.3f} at most ({p.mean():.3f} on average)'
            print(line)


if __name__ == '__main__':
    measure()
