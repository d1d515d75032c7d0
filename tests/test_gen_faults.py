"""aidetect-gen meets faults: a write that fails at the OS layer (file-size limit, read-only folder), a dataset given
as the photo folder, an empty folder, too little disk space, a dataset being written by another run. Each is one
line and exit 2, nothing wrong is written, and after a failed write the same command finishes the job."""
import os, signal, subprocess, zipfile, io
from collections import namedtuple
import pytest
from conftest import BIN, dataset_files, run_cli, noise_image, file_size_limit
from aidetect.dataset import DatasetLock, DatasetWriter, read_manifest


def _gen(src, out, *extra, preexec=None):
    cmd = [str(BIN / 'aidetect-gen'), 'variations', str(src), '--out', str(out), '--model', 'tiny', '--steps', '2', '--quiet', *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=preexec)


def _one_error_line(p, *want):
    "The run failed with exit 2 and exactly one error line (containing `want`), and no traceback."
    errs = [l for l in p.stderr.splitlines() if 'error' in l.lower()]
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
    assert len(errs) == 1 and errs[0].startswith('aidetect-gen: error: ') and all(w in errs[0] for w in want), p.stderr
    return errs[0]


def test_a_file_size_limit_is_one_line_and_the_rerun_equals_a_run_that_never_failed(photo_folder, tmp_path, tiny_backend):
    clean, hit = tmp_path / 'clean', tmp_path / 'hit'
    assert _gen(photo_folder, clean).returncode == 0
    # the tiny model is cached already (tiny_backend): only the dataset's files meet the limit (the PNG photos exceed it)
    p = _gen(photo_folder, hit, preexec=file_size_limit(5000))
    _one_error_line(p, 'could not write', str(hit), 'file-size limit', 'MB free', 'run the same command again')
    assert 0 < len((hit / 'manifest.csv').read_text().splitlines()) - 1 < 12     # it stopped part-way
    assert not list(hit.rglob('*.tmp'))
    r = _gen(photo_folder, hit)
    assert r.returncode == 0, r.stderr
    assert dataset_files(hit) == dataset_files(clean)                           # rows and files as if it never failed


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_read_only_folder_is_one_line_and_the_rerun_finishes(photo_folder, tmp_path):
    clean, ro = tmp_path / 'clean', tmp_path / 'ro'
    assert _gen(photo_folder, clean).returncode == 0
    (ro / 'ai').mkdir(parents=True); (ro / 'ai').chmod(0o555)
    try: _one_error_line(_gen(photo_folder, ro), 'could not write', 'permission denied')
    finally: (ro / 'ai').chmod(0o755)
    assert _gen(photo_folder, ro).returncode == 0
    assert dataset_files(ro) == dataset_files(clean)


def _tiny_dataset(d):
    with DatasetWriter(d) as w:
        for label in ('real', 'ai'):
            w.write_image(f'{label}/cat/0.png', noise_image(32, 32, seed=label == 'ai'), dict(format='PNG'),
                          dict(label=label, group='cat/0.png', generator='sd' if label == 'ai' else ''))
    return d


def _tree(d): return sorted(p.relative_to(d).as_posix() for p in d.rglob('*')) if d.exists() else None


@pytest.mark.parametrize('case', ['dataset', 'inside a dataset', 'holds a dataset', 'inside the output', 'holds the output'])
def test_a_dataset_as_the_photo_folder_is_refused_and_nothing_is_written(tmp_path, case):
    holder = tmp_path / 'holder'   # a folder of photos beside a dataset
    ds, photos = _tiny_dataset(holder / 'ds'), holder / 'photos'
    (photos / 'cat').mkdir(parents=True); noise_image(32, 32).save(photos / 'cat' / 'a.jpg')
    src, out, want = {
        'dataset': (ds, tmp_path / 'new', 'is an aidetect dataset'),
        'inside a dataset': (ds / 'ai', tmp_path / 'new', 'lies inside the aidetect dataset'),
        'holds a dataset': (holder, tmp_path / 'new', 'holds the aidetect dataset'),
        'inside the output': (photos, holder, 'lies inside --out'),
        'holds the output': (photos, photos / 'new', 'must not be inside the source folder')}[case]
    before = _tree(tmp_path)
    _one_error_line(_gen(src, out), want)
    assert _tree(tmp_path) == before                                            # no folder, no lock, no row


def test_an_empty_photo_folder_leaves_no_output_and_no_lock(tmp_path):
    (tmp_path / 'empty').mkdir()
    _one_error_line(_gen(tmp_path / 'empty', tmp_path / 'out'), 'no files found')
    assert not (tmp_path / 'out').exists()


def test_too_little_free_space_is_refused_before_anything_is_written(photo_folder, tmp_path, monkeypatch, capsys):
    from aidetect.gen.cli import main
    usage = namedtuple('usage', 'total used free')
    monkeypatch.setattr('shutil.disk_usage', lambda p: usage(10**9, 10**9 - 2**20, 2**20 // 100))   # 10 kB free
    args = ['variations', str(photo_folder), '--out', str(tmp_path / 'ds'), '--model', 'tiny', '--steps', '2', '--quiet']
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'needs about 0.1 MB for the 12 images still to make' in err and '0.0 MB free' in err and '--no-space-check' in err
    assert not (tmp_path / 'ds').exists()
    assert main(args + ['--no-space-check']) == 0 and len(read_manifest(tmp_path / 'ds')) == 12   # the flag overrides it


# --- every writer takes the dataset's lock ---------------------------------------------------------------------

def _refused_while_locked(folder, *cmd):
    "Run `cmd` while this process holds `folder`'s lock: refused in one line naming this process, nothing written."
    with DatasetLock(folder):
        before = _tree(folder)
        p = run_cli('aidetect-gen', *cmd)
        _one_error_line(p, f'{folder} is being written by pid {os.getpid()}')
        assert _tree(folder) == before


def test_import_takes_the_dataset_lock(tmp_path):
    real, var = tmp_path / 'real', tmp_path / 'var'
    (real / 'cat').mkdir(parents=True); var.mkdir()
    noise_image(32, 32).save(real / 'cat' / 'a.jpg'); noise_image(32, 32, seed=1).save(var / 'a.png')
    _refused_while_locked(tmp_path / 'ds', 'import', var, '--real', real, '--out', tmp_path / 'ds', '--generator', 'x')
    run_cli('aidetect-gen', 'import', var, '--real', real, '--out', tmp_path / 'ds', '--generator', 'x', check=0)   # then it runs
    assert len(read_manifest(tmp_path / 'ds')) == 2


def test_fetch_takes_the_dataset_lock(tmp_path):
    z = tmp_path / 'weather.zip'
    with zipfile.ZipFile(z, 'w') as f:
        b = io.BytesIO(); noise_image(16, 12).save(b, 'JPEG'); f.writestr('dataset/dew/1.jpg', b.getvalue())
    _refused_while_locked(tmp_path / 'photos' / 'weather', 'fetch', 'weather', '--to', tmp_path / 'photos', '--archive', z)
    run_cli('aidetect-gen', 'fetch', 'weather', '--to', tmp_path / 'photos', '--archive', z, check=0)
    assert (tmp_path / 'photos' / 'weather' / 'dew' / '1.jpg').exists()


def test_per_generator_takes_the_lock_of_every_dataset_it_writes(tmp_path):
    ds = _tiny_dataset(tmp_path / 'zoo')
    with DatasetWriter(ds) as w:   # a second generator
        w.write_image('ai/vae/cat/0.png', noise_image(32, 32, seed=5), dict(format='PNG'),
                      dict(label='ai', group='cat/0.png', generator='vae'))
    out = tmp_path / 'by-gen'
    # the second generator's folder is being written: not even the first one's is made
    _refused_while_locked(out / 'vae', 'per-generator', ds, '--out', out)
    assert not (out / 'sd' / 'manifest.csv').exists()
    run_cli('aidetect-gen', 'per-generator', ds, '--out', out, check=0)
    assert len(read_manifest(out / 'sd')) == len(read_manifest(out / 'vae')) == 2


def test_sigterm_stops_generation_cleanly_and_the_rerun_equals_a_run_never_stopped(photo_folder, tmp_path, tiny_backend):
    "A scheduler's SIGTERM: the finished images are written, one line says so, exit 143; the same command finishes the rest."
    import time
    clean, cut = tmp_path / 'clean', tmp_path / 'cut'
    assert _gen(photo_folder, clean, '--n-per-image', '4').returncode == 0
    cmd = [str(BIN / 'aidetect-gen'), 'variations', str(photo_folder), '--out', str(cut), '--model', 'tiny', '--steps', '2',
           '--quiet', '--n-per-image', '4', '--batch-size', '1']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:
        m = cut / 'manifest.csv'
        if m.exists() and len(m.read_text().splitlines()) > 3: break   # some images written, most to come
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    if p.returncode == 0: pytest.skip('generation finished before SIGTERM arrived')
    assert p.returncode == 143 and 'Traceback' not in err and 'interrupted: finishing the files already generated' in err, err
    assert 'rerun the same command' in err and not list(cut.rglob('*.tmp'))
    r = _gen(photo_folder, cut, '--n-per-image', '4')
    assert r.returncode == 0, r.stderr
    assert dataset_files(cut) == dataset_files(clean)
