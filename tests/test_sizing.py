"""One processing history for both classes: lossless JPEG crops, the identity control under each size policy, on
mixed-size JPEG photos (some smaller than the generation size, some 2-3x bigger, qualities 75-95)."""
import io, os, tempfile
from pathlib import Path

import numpy as np, pytest
from PIL import Image

from aidetect.dataset import read_manifest
from aidetect.gen.run import VariationJob, run_variations
from aidetect.gen.sizing import SIZE_POLICIES, Sizing, centre_box, jpeg_crop
from aidetect.gen.zoo.load import ZOO, load_generator

SIZE = 64   # the generation size of these tests


def _photo(w, h, seed):
    "A smooth photo-like image (gradients and blobs: JPEG-compressible like a photo, unlike noise)."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(w, h)
    chans = [np.sin(xx * rng.uniform(2, 9) + yy * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    im = (np.stack(chans, -1) * 90 + 128 + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(im)


def _plain(data: bytes) -> np.ndarray:
    "Decoded without libjpeg's fancy chroma upsampling (which reads across block borders): block-local pixels."
    import jpeglib
    fd, p = tempfile.mkstemp(suffix='.jpg'); os.write(fd, data); os.close(fd)
    try: return jpeglib.read_spatial(p, flags=['-DO_FANCY_UPSAMPLING']).spatial
    finally: os.unlink(p)


@pytest.fixture(scope='module')
def jpeg_photos(tmp_path_factory):
    "Eight JPEG photos: two smaller than SIZE, six 2-3x bigger; qualities 75-95, 4:2:0 and 4:4:4, one progressive."
    src = tmp_path_factory.mktemp('photos') / 'mixed'
    sizes = [(50, 40), (60, 64), (128, 96), (150, 190), (192, 128), (100, 170), (180, 180), (160, 120)]
    for i, (w, h) in enumerate(sizes):
        (src / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        _photo(w, h, i).save(src / f'c{i % 2}' / f'{i}.jpg', quality=[75, 80, 85, 90, 95][i % 5],
                             subsampling=2 if i % 3 else 0, progressive=i == 3)
    return src


# --- lossless crops ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('subsampling', [0, 2])
def test_a_lossless_crop_is_the_same_crop_of_the_decoded_photo(subsampling):
    buf = io.BytesIO()
    _photo(150, 110, 1).save(buf, 'JPEG', quality=83, subsampling=subsampling)
    data = buf.getvalue()
    box = centre_box((150, 110), (96, 64))
    cut = jpeg_crop(data, box)
    l, t, r, b = box
    assert Image.open(io.BytesIO(cut)).size == (96, 64)
    assert np.array_equal(_plain(cut), _plain(data)[t:b, l:r])
    # the default decoder too, away from the crop's border (fancy upsampling reads one chroma sample across it)
    a, ref = np.asarray(Image.open(io.BytesIO(cut)), int), np.asarray(Image.open(io.BytesIO(data)), int)[t:b, l:r]
    assert np.array_equal(a[16:-16, 16:-16], ref[16:-16, 16:-16])
    assert Image.open(io.BytesIO(cut)).quantization == Image.open(io.BytesIO(data)).quantization


def test_an_uncropped_real_copy_is_the_photos_pixels_exactly():
    buf = io.BytesIO()
    ex = Image.Exif(); ex[0x010f] = 'Camera'
    _photo(70, 50, 2).save(buf, 'JPEG', quality=77, exif=ex.tobytes(), progressive=True)
    whole = jpeg_crop(buf.getvalue())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(whole))), np.asarray(Image.open(buf)))
    assert 'exif' not in Image.open(io.BytesIO(whole)).info                   # metadata stripped


def test_a_crop_off_the_mcu_grid_is_refused():
    buf = io.BytesIO()
    _photo(64, 64, 3).save(buf, 'JPEG', subsampling=2)
    with pytest.raises(Exception, match='MCU grid'): jpeg_crop(buf.getvalue(), (8, 8, 40, 40))


# --- the identity control ------------------------------------------------------------------------------------------

def test_identity_is_listed_as_a_control():
    assert ZOO['identity'].kind == 'control'
    b = load_generator('identity', 'tiny', device='cpu')
    assert b.describe()['kind'] == 'control' and b.default_size == 64


@pytest.mark.parametrize('policy', SIZE_POLICIES)
def test_identity_datasets_under_each_policy(jpeg_photos, tmp_path, policy):
    out = tmp_path / policy
    s = run_variations(VariationJob(str(jpeg_photos), str(out), size=SIZE, size_policy=policy),
                       load_generator('identity', device='cpu'), progress=False, log=lambda m: None)
    assert s.done == 8 and s.real == 8
    m = read_manifest(out)
    assert set(m[m.label == 'ai'].generator) == {'identity'}
    for g, d in m.groupby('group'):
        real, ai = d[d.label == 'real'].iloc[0], d[d.label == 'ai'].iloc[0]
        photo = Image.open(jpeg_photos / g)
        if policy == 'crop':
            assert (real.width, real.height) == (ai.width, ai.height) and real.width % 16 == 0 and real.height % 16 == 0
            assert real['resample'] in ('crop-lossless', 'strip') and ai['resample'] in ('', 'crop')
            r, a = Image.open(out / real.path), Image.open(out / ai.path)
            assert r.quantization == a.quantization == photo.quantization         # one set of tables, the photo's
            assert np.array_equal(_plain((out / real.path).read_bytes()),
                                  _plain((jpeg_photos / g).read_bytes())[_box(photo.size, r.size)])   # the photo's blocks
            # the control is the same crop: it differs from the real copy only by one encode with the same tables
            assert np.abs(np.asarray(r, int) - np.asarray(a, int)).mean() < 2
        if policy == 'matched':
            assert (real.width, real.height) == (ai.width, ai.height)
            if max(photo.size) > SIZE: assert 'down-lanczos' in real['resample']     # the photo downscaled, the control not
        if policy in ('source', 'native'): assert (real.width, real.height) == photo.size


def _box(size, crop):
    l, t, r, b = centre_box(size, crop)
    return slice(t, b), slice(l, r)


def test_identity_import_under_crop(jpeg_photos, tmp_path):
    "An import whose 'AI images' are PNG copies of the photos: under crop, real copies are lossless crops, never resized."
    from aidetect.gen.importer import import_variants
    var = tmp_path / 'variants'
    var.mkdir()
    for p in jpeg_photos.rglob('*.jpg'): Image.open(p).save(var / f'{p.stem}.png')
    import_variants(var, jpeg_photos, tmp_path / 'ds', 'copy', size_policy='crop')
    m = read_manifest(tmp_path / 'ds')
    assert set(m.loc[m.label == 'real', 'resample']) <= {'crop-lossless', 'strip'}
    assert not m['resample'].str.contains('lanczos').any()
    assert (m.groupby('group')[['width', 'height']].nunique() == 1).all().all()


def test_sizing_rejects_an_unknown_policy():
    with pytest.raises(Exception, match='unknown --size-policy'): Sizing('square')


# --- what the audit sees: the default policy leaks nothing, `matched` leaks its resampling ----------------------------
def _skimage_jpegs(folder: Path, n: int, size: int, lo: float, hi: float, small_share: float, seed: int = 0):
    "`n` JPEG crops of scikit-image's photos: a `small_share` below `size`, the rest lo-hi× `size`; qualities 75-95."
    from skimage import data as skd
    photos = [getattr(skd, k)() for k in ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field')]
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = photos[i % len(photos)]
        w = int(size * (rng.uniform(0.6, 0.95) if rng.random() < small_share else rng.uniform(lo, hi)))
        h = min(int(w * rng.uniform(0.7, 1.0)), p.shape[0]); w = min(w, p.shape[1])
        y, x = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        (folder / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        Image.fromarray(p[y:y + h, x:x + w]).save(folder / f'c{i % 2}' / f'p{i:03d}.jpg', quality=int(rng.integers(75, 96)))
    return folder


@pytest.mark.slow
def test_the_audit_finds_no_pipeline_leak_under_crop_and_the_resampling_of_matched(tmp_path):
    "Real vs identity: under the default policy at chance from metadata and pixels; under `matched` (photos 1.25-3× the size) caught."
    from aidetect.audit import audit
    mixed = _skimage_jpegs(tmp_path / 'mixed', 40, 128, 2, 3, 0.25)
    big = _skimage_jpegs(tmp_path / 'big', 40, 128, 1.25, 3, 0.0, seed=1)
    gen = load_generator('identity', device='cpu')
    for name, src, policy in (('crop', mixed, None), ('matched', big, 'matched')):
        job = VariationJob(str(src), str(tmp_path / name), size=128, **({'size_policy': policy} if policy else {}))
        run_variations(job, gen, progress=False, log=lambda m: None)
    t = audit({'crop': tmp_path / 'crop', 'matched': tmp_path / 'matched'}, bootstrap=300, pixels=True).table.set_index(['dataset', 'kind'])
    crop_px, crop_md, matched_px = t.loc[('crop', 'pixels')], t.loc[('crop', 'metadata')], t.loc[('matched', 'pixels')]
    assert abs(crop_px.auc - 0.5) <= 0.1 and crop_px.auc <= 0.65, crop_px   # the default: at chance, two-sided
    assert abs(crop_md.auc - 0.5) <= 0.1, crop_md
    assert matched_px.auc >= 0.75, matched_px   # downscaled real copies against native crops: the audit sees resampling
