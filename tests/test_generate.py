"""aidetect-gen variations: complete datasets, every input accounted for, reruns that change nothing."""
import hashlib, io
import numpy as np, pandas as pd
import pytest
from PIL import Image
from conftest import dataset_files, run_cli, noise_image
from aidetect.dataset import read_manifest, read_rejected


def _gen(src, out, *extra, check=0):
    return run_cli('aidetect-gen', 'variations', src, '--out', out, '--model', 'tiny', '--steps', '2', '--quiet',
                   *extra, check=check)


def test_good_and_broken_inputs_are_all_accounted_for(photo_folder, tmp_path):
    (photo_folder / 'dog' / 'empty.jpg').write_bytes(b'')
    (photo_folder / 'dog' / 'page.jpg').write_bytes(b'<html>404</html>')
    good = (photo_folder / 'cat' / 'c0.jpg').read_bytes()
    (photo_folder / 'cat' / 'cut.jpg').write_bytes(good[:len(good) // 2])
    out = tmp_path / 'ds'
    p = _gen(photo_folder, out)
    m, rej = read_manifest(out), read_rejected(out)
    inputs = {q.relative_to(photo_folder).as_posix() for q in photo_folder.rglob('*') if q.is_file()}
    used = set(m.loc[m.label == 'real', 'group'])
    assert used | set(rej.path) == inputs and not used & set(rej.path)
    assert dict(zip(rej.path, rej.reason)) == {'dog/empty.jpg': 'empty-file', 'dog/page.jpg': 'not-an-image',
                                               'cat/cut.jpg': 'truncated'}
    assert (m.label == 'ai').sum() == (m.label == 'real').sum() == 6
    assert set(m.loc[m.label == 'ai', 'group']) == used          # every variation points at its source
    assert '3 inputs rejected' in p.stderr


def _run(src, out, backend, **kw):
    from aidetect.gen.run import VariationJob, run_variations
    return run_variations(VariationJob(src=str(src), out=str(out), **kw), backend, progress=False, log=lambda m: None)


def test_matched_groups_share_size_format_and_jpeg_tables(photo_folder, tmp_path, tiny_backend):
    out = tmp_path / 'ds'
    _run(photo_folder, out, tiny_backend, size_policy='matched')   # the default, 'crop', is in test_sizing.py
    m = read_manifest(out)
    assert len(m) == 12
    for g, d in m.groupby('group'):
        real, ai = d[d.label == 'real'].iloc[0], d[d.label == 'ai'].iloc[0]
        src = (photo_folder / g).read_bytes()
        assert real.source_sha256 == ai.source_sha256 == hashlib.sha256(src).hexdigest() and real.source_path == g
        with Image.open(out / real.path) as r, Image.open(out / ai.path) as a, Image.open(io.BytesIO(src)) as s:
            assert r.size == a.size == s.size and r.format == a.format == s.format        # small sources: no resize
            assert getattr(r, 'quantization', None) == getattr(a, 'quantization', None) == getattr(s, 'quantization', None)
            diff = np.abs(np.asarray(r.convert('RGB'), dtype=int) - np.asarray(s.convert('RGB'), dtype=int))
            # the source's own pixels, re-encoded (noise at 4:2:0 is JPEG's worst case: chroma is resampled twice)
            assert diff.max() == 0 if s.format == 'PNG' else diff.mean() < 12
        assert (real['resample'], ai['resample']) == ('reencode', '')
        assert ai.generator == 'tiny' and ai.steps == 3 and pd.notna(ai.seed) and ai.conditioning == 'card-bicubic-32'


@pytest.mark.parametrize('policy', ['source', 'native'])
def test_other_size_policies_keep_real_images_untouched(photo_folder, tmp_path, tiny_backend, policy):
    out = tmp_path / 'ds'
    _run(photo_folder, out, tiny_backend, size=32, size_policy=policy)
    m = read_manifest(out)
    for _, r in m[m.label == 'real'].iterrows():
        assert (out / r.path).read_bytes() == (photo_folder / r.group).read_bytes() and r['resample'] == ''
    src_size = {r.group: (r.width, r.height) for _, r in m[m.label == 'real'].iterrows()}
    for _, r in m[m.label == 'ai'].iterrows():
        with Image.open(out / r.path) as im:
            if policy == 'source': assert im.size == src_size[r.group] and r['resample'].endswith('up-lanczos')
            else: assert max(im.size) == 32 and r['resample'] == ''


def test_same_command_twice_gives_identical_datasets(photo_folder, tmp_path, tiny_backend):
    a, b = tmp_path / 'dataset-1', tmp_path / 'dataset-2'
    _run(photo_folder, a, tiny_backend); _run(photo_folder, b, tiny_backend)
    files = dataset_files   # a run's log and its lock are not data; the card's own name is taken out
    assert files(a) == files(b) and b'# DS' in files(a)['README.md']
    before = files(a)
    s = _run(photo_folder, a, tiny_backend)                          # a rerun skips everything
    assert (s.done, s.skipped, s.real) == (0, 6, 0)
    assert files(a) == before


def test_bad_flags_and_missing_source_are_clear(tmp_path):
    p = run_cli('aidetect-gen', 'variations', tmp_path / 'nope', '--out', tmp_path / 'o', '--model', 'tiny')
    assert p.returncode == 2 and 'does not exist' in p.stderr and 'Traceback' not in p.stderr
    p = run_cli('aidetect-gen', 'variations', tmp_path, '--out', tmp_path / 'o', '--steps', '0')
    assert p.returncode == 2 and 'steps must be at least 1, got 0' in p.stderr


def test_nothing_usable_is_an_error(tmp_path):
    src = tmp_path / 'src'; src.mkdir()
    (src / 'a.jpg').write_bytes(b'')
    p = _gen(src, tmp_path / 'o', check=2)
    assert 'nothing usable' in p.stderr and 'rejected.csv' in p.stderr
