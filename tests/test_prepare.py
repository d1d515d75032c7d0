"""`aidetect prepare` as a user runs it: the command line, the dataset lock, the free-space check, a real SIGKILL while it
writes and a rerun that loses and doubles nothing, and training on the prepared copy."""
import os, random, signal, subprocess, time

import numpy as np, pandas as pd, pytest
from PIL import Image

from conftest import BIN, dataset_files, run_cli
from aidetect.core import AidetectError
from aidetect.dataset import DatasetLock, DatasetWriter, ai_path, merge_parts, read_manifest, read_rejected, real_path
from aidetect.images import encode_image


def _photo(i, w, h):
    "A smooth image with grain: JPEG-encoding it takes real work, like a photo's."
    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(small, float) + rng.normal(0, 6, (h, w, 1)), 0, 255).astype(np.uint8))


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    "A dataset of n groups (a real JPEG and an AI PNG each, 480×360 or 360×480), one of its files broken."
    root, n = tmp_path_factory.mktemp('prep') / 'src', 60
    with DatasetWriter(root) as w:
        for i in range(n):
            w_, h_ = (480, 360) if i % 2 else (360, 480)
            w.write_file(real_path(f'c/{i:03d}.jpg'), encode_image(_photo(i, w_, h_), 'JPEG', 85),
                         dict(label='real', group=f'g{i}', domain='d', category='c'))
            w.write_file(ai_path('gen', f'c/{i:03d}__v0.png'), encode_image(_photo(1000 + i, w_, h_), 'PNG'),
                         dict(label='ai', group=f'g{i}', domain='d', category='c', generator='gen'))
    merge_parts(root)
    (root / real_path('c/007.jpg')).write_bytes(b'not a jpeg')   # recorded as unusable, in every run alike
    return root


@pytest.fixture(scope='module')
def clean(source, tmp_path_factory):
    "A run that never failed, through the CLI."
    out = tmp_path_factory.mktemp('clean') / 'p'
    p = run_cli('aidetect', 'prepare', source, '--out', out, '--size', '48', check=0)
    assert '119 image(s) in' in p.stdout and '1 unusable' in p.stdout and 'c/007.jpg: not-an-image' in p.stdout, p.stdout
    return out


def test_the_cli_makes_a_copy_pointing_back_to_its_source(source, clean):
    m, src = read_manifest(clean), read_manifest(source)
    assert len(m) == 119 and read_rejected(clean).path.tolist() == [real_path('c/007.jpg')]
    assert set(m[['width', 'height']].min(axis=1)) == {48}                         # every image shrunk once, to 48 px
    back = src.set_index('path').loc[m['source_path']]
    assert (m['source_sha256'].values == back['sha256'].values).all()
    assert (m[['label', 'group', 'format']].values == back[['label', 'group', 'format']].values).all()
    for f, sha in zip(m.path, m.sha256):                                           # the rows say what is on disk
        im = Image.open(clean / f)
        assert min(im.size) == 48 and im.format == m.set_index('path').loc[f, 'format']


def test_a_second_run_on_the_same_copy_is_refused_in_one_line(source, tmp_path):
    out = tmp_path / 'p'
    with DatasetLock(out):                                                         # another `prepare` is writing it
        p = run_cli('aidetect', 'prepare', source, '--out', out, '--size', '48')
    assert p.returncode == 2 and 'Traceback' not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f'{out} is being written by pid {os.getpid()}' in p.stderr
    assert not (out / 'manifest.csv').exists() or len(read_manifest(out)) == 0     # nothing written under the lock


def test_too_little_free_space_is_refused_before_any_image_with_need_and_free(source, tmp_path, monkeypatch):
    import shutil
    from aidetect import prepare
    need = sum((source / f).stat().st_size for f in read_manifest(source).path)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(prepare.shutil, 'disk_usage', lambda p: real_usage(p)._replace(free=need // 2))
    with pytest.raises(AidetectError) as e: prepare.prepare_dataset(source, tmp_path / 'p', size=48, progress=False)
    line = str(e.value)
    assert '\n' not in line and f'needs up to {need / 2**20:,.1f} MB for 120 image(s)' in line
    assert f'but {need / 2 / 2**20:,.1f} MB are free there' in line
    assert not list((tmp_path / 'p').rglob('*.jpg')) and not list((tmp_path / 'p').rglob('*.png'))
    monkeypatch.setattr(prepare.shutil, 'disk_usage', lambda p: real_usage(p)._replace(free=need))   # just enough
    assert len(prepare.prepare_dataset(source, tmp_path / 'p', size=48, progress=False)) == 119


def _images(out):
    return [p for p in out.rglob('*') if p.suffix in ('.jpg', '.png')] if out.exists() else []


def test_sigkill_while_preparing_then_a_rerun_loses_and_doubles_nothing(source, clean, tmp_path):
    out, rng = tmp_path / 'p', random.Random(os.getpid())
    cmd = [str(BIN / 'aidetect'), 'prepare', str(source), '--out', str(out), '--size', '48', '--workers', '1']
    kills = []
    for _ in range(2):                                                             # killed twice at random moments
        have = len(_images(out))
        at = have + rng.randint(1, 30)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(_images(out)) < at and proc.poll() is None and time.time() < deadline: time.sleep(0.002)
        proc.send_signal(signal.SIGKILL); proc.wait()
        assert proc.returncode == -signal.SIGKILL, 'the run finished before it was killed: make the source bigger'
        kills.append(len(_images(out)))
    assert 0 < kills[0] <= kills[1] < 119 and not (out / 'README.md').exists()     # killed mid-way, unmerged
    p = run_cli('aidetect', 'prepare', source, '--out', out, '--size', '48', check=0)
    assert '119 image(s) in' in p.stdout and '1 unusable' in p.stdout
    assert not [f for f in out.rglob('*.tmp')]                                    # no half-written file left
    assert dataset_files(out) == dataset_files(clean)                              # files and rows equal the clean run
    m = read_manifest(out)
    assert m.path.is_unique and len(m) == 119 and len(read_rejected(out)) == 1


def test_training_on_the_prepared_copy(clean):
    from aidetect.train import train_detector
    learn = train_detector(clean, arch='simple_cnn', pretrained=False, size=32, epochs=1, bs=16, lr=1e-3,
                           freeze_epochs=0, verbose=False, aug='none')
    n = len(learn.dls.train_ds) + len(learn.dls.valid_ds)
    assert n == 119 and len(learn.recorder.values) == 1
    x, y = learn.dls.one_batch()
    assert tuple(x.shape[-2:]) == (32, 32)
