"""The libjpeg-turbo path under `open_image(draft=...)` and `open_pixels` gives PIL's pixels; the GPU batch decoder agrees with the CPU."""
import io
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from aidetect.core import AidetectError
from aidetect.decode import crop_resize, cuda_device, decode_batch, draft_scale, gpu_decodable, turbo_decode
from aidetect.images import BadImage, open_image, open_pixels
from aidetect.dataset import check_image_file

# Tolerances, in levels of 255, against PIL's own decode at the same draft scale. The accurate path (the default) is
# the same libjpeg-turbo arithmetic as PIL's and measured 0 on every kind below, so it is held to equality; `fast=True`
# (fast integer DCT, plain chroma upsampling) measured 1.0-1.5 mean at full scale on these photos, 0 when scaled.
MAX_FAST_MEAN_DIFF = 3.0
# decode_batch decodes at full size (nvJPEG has no DCT scaling) where the CPU path drafts; after the crop-resize to the
# model's input the two differ by the pre-filter only (tests/test_fast_path.py holds the CPU path to 2.0 likewise)
MAX_BATCH_MEAN_DIFF = 2.0
# nvJPEG's IDCT and upsampling are not libjpeg's: the GPU batch against the same function on the CPU
MAX_GPU_MEAN_DIFF, MAX_GPU_PIXEL_DIFF = 1.0, 24


def photo(w=160, h=120, seed=0, mode='RGB'):
    "Smooth gradients plus grain: chroma subsampling and the DCT both leave marks, as in a photo."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([200 * x + 30, 180 * y + 40, 60 * (x + y) + 60], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert(mode)


def jpeg(im, **kw) -> bytes:
    b = io.BytesIO(); im.save(b, 'JPEG', quality=90, **kw); return b.getvalue()


def with_orientation(im, o: int) -> bytes:
    ex = im.getexif(); ex[0x0112] = o
    return jpeg(im, exif=ex.tobytes())


def pil_path(data, draft=None):
    "What `open_image` did before libjpeg-turbo: PIL's draft decode, EXIF transpose, RGB (the independent reference)."
    im = Image.open(io.BytesIO(data))
    if draft:
        dw, dh = draft
        if im.getexif().get(0x0112) in (5, 6, 7, 8): dw, dh = dh, dw
        im.draft(im.mode, (dw, dh))
    return np.array(ImageOps.exif_transpose(im).convert('RGB'))


KINDS = {'baseline 4:2:0': jpeg(photo()), 'baseline 4:4:4': jpeg(photo(), subsampling=0),
         'baseline 4:2:2, odd size': jpeg(photo(161, 117), subsampling=1), 'progressive': jpeg(photo(), progressive=True),
         'optimized progressive 4:4:4': jpeg(photo(), progressive=True, optimize=True, subsampling=0),
         'grayscale': jpeg(photo(mode='L')), 'CMYK': jpeg(photo(mode='CMYK')),
         **{f'EXIF orientation {o}': with_orientation(photo(), o) for o in range(2, 9)}}


@pytest.fixture
def turbo_calls(monkeypatch):
    "How often libjpeg-turbo decoded, and what it returned (None: declined, PIL did it)."
    calls = []
    def spy(*a, **k):
        out = turbo_decode(*a, **k); calls.append(out is not None); return out
    monkeypatch.setattr('aidetect.images.turbo_decode', spy)
    return calls


@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('draft', [(20, 20), (40, 40), (80, 60), (500, 500)])
def test_the_turbo_path_gives_pils_pixels(kind, draft, turbo_calls):
    data = KINDS[kind]
    got = np.asarray(open_image(data, draft=draft))
    want = pil_path(data, draft)
    assert got.shape == want.shape and np.array_equal(got, want), (kind, np.abs(got.astype(int) - want).max())
    assert turbo_calls == ([] if kind == 'CMYK' else [True]), turbo_calls   # CMYK goes to PIL, the rest to libjpeg-turbo
    arr = open_pixels(data, draft=draft)   # the loaders' array, with no PIL image made of libjpeg-turbo's pixels
    assert arr.dtype == np.uint8 and arr.flags.writeable and np.array_equal(arr, want), kind


@pytest.mark.parametrize('kind', ['baseline 4:2:0', 'progressive', 'grayscale', 'EXIF orientation 6'])
def test_the_fast_modes_stay_within_their_tolerance(kind):
    data = KINDS[kind]
    full = np.abs(np.asarray(open_image(data, draft=(500, 500), fast=True), dtype=int) - pil_path(data)).mean()
    assert full < MAX_FAST_MEAN_DIFF, full
    if kind != 'grayscale': assert full > 0.1, full   # positive control: the fast modes were really on
    half = open_image(data, draft=(70, 50), fast=True)
    assert np.abs(np.asarray(half, dtype=int) - pil_path(data, (70, 50))).mean() < MAX_FAST_MEAN_DIFF


@pytest.mark.parametrize('fmt', ['PNG', 'WEBP', 'GIF', 'BMP', 'TIFF'])
def test_other_formats_go_through_pil_unchanged(fmt, turbo_calls):
    b = io.BytesIO(); photo().save(b, fmt, **({'lossless': True} if fmt == 'WEBP' else {})); data = b.getvalue()
    for draft, k in (((40, 40), 2), ((20, 20), 4), ((500, 500), 1)):
        want = Image.open(io.BytesIO(data)).convert('RGB')
        want = want.reduce(k) if k > 1 else want
        assert np.array_equal(np.asarray(open_image(data, draft=draft)), np.asarray(want))
        assert np.array_equal(open_pixels(data, draft=draft), np.asarray(want))
        assert draft_scale(160, 120, draft) == k
    assert turbo_calls == []


def test_bad_files_keep_their_reasons(tmp_path):
    data = KINDS['baseline 4:2:0']
    cases = {'truncated': data[:len(data) // 2], 'not-an-image': b'<html>not found</html>', 'empty-file': b''}
    for reason, b in cases.items():
        for opener in (open_image, open_pixels):
            with pytest.raises(BadImage) as e: opener(b, draft=(40, 40))
            assert e.value.reason == reason
        (tmp_path / f'{reason}.jpg').write_bytes(b)
        assert check_image_file(tmp_path / f'{reason}.jpg').startswith(f'{reason}:')   # recorded, not raised
    assert check_image_file(tmp_path / 'missing.jpg').startswith('missing:')
    (tmp_path / 'good.jpg').write_bytes(data)
    assert check_image_file(tmp_path / 'good.jpg') == ''


def test_a_path_a_bytes_object_and_a_file_object_decode_alike(tmp_path):
    data = KINDS['EXIF orientation 6']
    (tmp_path / 'x.jpg').write_bytes(data)
    ims = [open_image(s, draft=(40, 40)) for s in (tmp_path / 'x.jpg', str(tmp_path / 'x.jpg'), data, io.BytesIO(data))]
    assert all(np.array_equal(np.asarray(ims[0]), np.asarray(i)) for i in ims[1:])
    assert ims[0].size == (60, 80)   # upright, at 1/2 scale


def cpu_path(data, size):
    "The CPU path's model input: `open_image` at the validation draft, then the crop-resize."
    return crop_resize(torch.from_numpy(np.array(open_image(data, draft=(2 * size, 2 * size)))).permute(2, 0, 1),
                       (size, size))


def test_the_gpu_decoder_run_on_the_cpu_agrees_with_the_cpu_path():
    datas = [d for d in KINDS.values() if gpu_decodable(d)]   # what the GPU path is given as bytes: all but CMYK
    assert len(datas) == len(KINDS) - 1
    got = decode_batch(datas, 32, device='cpu')
    assert got.shape == (len(datas), 3, 32, 32) and got.dtype == torch.uint8
    want = torch.stack([cpu_path(d, 32) for d in datas])
    diff = (got.float() - want.float()).abs().mean(dim=(1, 2, 3))
    assert diff.max() < MAX_BATCH_MEAN_DIFF, diff
    full = torch.stack([crop_resize(torch.from_numpy(pil_path(d)).permute(2, 0, 1), (32, 32)) for d in datas])
    assert torch.equal(got, full)   # it is exactly the full decode crop-resized: the draft is the only difference
    oriented = decode_batch([KINDS['EXIF orientation 6']], (24, 48), device='cpu', pcts=[(0, 0)])
    assert torch.equal(oriented[0], crop_resize(torch.from_numpy(pil_path(KINDS['EXIF orientation 6'])).permute(2, 0, 1),
                                                (24, 48), (0, 0)))


@pytest.mark.skipif(torch.cuda.is_available(), reason='there is a GPU here')
def test_the_gpu_decoder_without_cuda_says_so_in_one_line():
    with pytest.raises(AidetectError) as e: decode_batch([KINDS['progressive']], 32, device='cuda')
    assert '\n' not in str(e.value) and 'CUDA' in str(e.value) and '--decode cpu' in str(e.value)
    assert cuda_device('cpu') == torch.device('cpu')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_the_gpu_decoder_agrees_with_itself_on_the_cpu():
    datas = [d for d in KINDS.values() if gpu_decodable(d)]
    pcts = [(0.1 * i % 1, 0.7) for i in range(len(datas))]
    gpu = decode_batch(datas, 32, device='cuda', pcts=pcts)
    assert gpu.device.type == 'cuda'
    diff = (gpu.cpu().float() - decode_batch(datas, 32, device='cpu', pcts=pcts).float()).abs()
    assert diff.mean() < MAX_GPU_MEAN_DIFF and diff.max() <= MAX_GPU_PIXEL_DIFF, (diff.mean(), diff.max())
