"""aidetect-gen beyond the happy path: odd images, crashes, batching, processes, safety blackouts, other sources."""
import io, json, os, signal, subprocess, sys, time, zipfile
from pathlib import Path

import numpy as np, pandas as pd, torch
import pytest
from PIL import Image

from conftest import dataset_files, BIN, run_cli, noise_image
from aidetect.images import jpeg_quality
from aidetect.dataset import read_manifest, read_rejected
from aidetect.gen.run import VariationJob, run_variations


def _run(src, out, backend, **kw):
    return run_variations(VariationJob(src=str(src), out=str(out), **kw), backend, progress=False, log=lambda m: None)


def _files(d: Path) -> dict: return dataset_files(d)


def _accounted(src: Path, out: Path):
    "Every input file is in manifest.csv (as a real image) or in rejected.csv, never both."
    m, rej = read_manifest(out), read_rejected(out)
    inputs = {p.relative_to(src).as_posix() for p in src.rglob('*') if p.is_file() and not p.name.startswith('.')}
    used = set(m.loc[m.label == 'real', 'group'])
    assert used | set(rej.path) == inputs, (inputs - used - set(rej.path), (used | set(rej.path)) - inputs)
    assert not used & set(rej.path)
    return m, rej


@pytest.fixture
def odd_folder(tmp_path):
    "Valid images in every awkward mode, format and name, next to broken files."
    src = tmp_path / 'odd'; (src / 'modes').mkdir(parents=True); (src / 'names').mkdir(); (src / 'broken').mkdir()
    base = noise_image(48, 40, seed=1)
    base.convert('CMYK').save(src / 'modes' / 'cmyk.jpg', quality=90)
    Image.fromarray((np.asarray(base.convert('L'), dtype=np.uint16) * 257)).save(src / 'modes' / 'sixteen.png')
    assert Image.open(src / 'modes' / 'sixteen.png').mode.startswith('I')
    p = base.convert('P', palette=Image.ADAPTIVE, colors=16); p.info['transparency'] = 0
    p.save(src / 'modes' / 'palette_alpha.png', transparency=0)
    rgba = base.convert('RGBA'); rgba.putalpha(128); rgba.save(src / 'modes' / 'rgba.png')
    base.convert('1').save(src / 'modes' / 'bilevel.png')
    base.convert('L').save(src / 'modes' / 'gray.jpg')
    ex = base.getexif(); ex[0x0112] = 6
    base.save(src / 'modes' / 'rotated.jpg', exif=ex.tobytes())
    base.save(src / 'modes' / 'photo.webp', quality=80)
    frames = [base.convert('P'), noise_image(48, 40, seed=2).convert('P')]
    frames[0].save(src / 'modes' / 'anim.gif', save_all=True, append_images=frames[1:], duration=100, loop=0)
    base.save(src / 'names' / 'UPPER.JPG'); base.save(src / 'names' / 'ünïcödé 名前.png'); base.save(src / 'names' / 'with space.jpg')
    good = (src / 'names' / 'UPPER.JPG').read_bytes()
    (src / 'broken' / 'empty.jpg').write_bytes(b'')
    (src / 'broken' / 'truncated.jpg').write_bytes(good[:len(good) // 3])
    (src / 'broken' / 'notes.txt').write_text('not an image')
    (src / 'broken' / 'page.png').write_bytes(b'<html><body>404</body></html>')
    Image.new('1', (20000, 10000)).save(src / 'broken' / 'bomb.png')    # 200 Mpx: over PIL's bomb limit
    (src / '.DS_Store').write_bytes(b'\0\0')                              # hidden: not an input
    return src


def test_odd_valid_images_are_used_and_broken_ones_rejected_with_reasons(odd_folder, tmp_path, tiny_backend):
    out = tmp_path / 'ds'
    s = _run(odd_folder, out, tiny_backend, batch_size=3)
    m, rej = _accounted(odd_folder, out)
    assert dict(zip(rej.path, rej.reason)) == {
        'broken/empty.jpg': 'empty-file', 'broken/truncated.jpg': 'truncated', 'broken/notes.txt': 'not-an-image',
        'broken/page.png': 'not-an-image', 'broken/bomb.png': 'decompression-bomb'}
    assert (m.label == 'real').sum() == (m.label == 'ai').sum() == 12 and s.done == 12 and s.rejected == 5
    ai = m[m.label == 'ai'].set_index('group')
    assert ai.loc['modes/rotated.jpg', ['width', 'height']].tolist() == [32, 48]   # upright like the source shows (40x48), on 'crop''s 16 px grid
    assert ai.loc['modes/photo.webp', 'format'] == 'WEBP' and ai.loc['modes/anim.gif', 'format'] == 'GIF'
    for _, r in m[m.label == 'ai'].iterrows():
        with Image.open(out / r.path) as im: assert im.size == (r.width, r.height)


def test_jpeg_sources_give_jpeg_variants_at_the_source_quality(tmp_path, tiny_backend):
    src = tmp_path / 'src'; src.mkdir()
    for q in (60, 85, 95): noise_image(64, 48, seed=q).save(src / f'q{q}.jpg', quality=q)
    out = tmp_path / 'ds'
    _run(src, out, tiny_backend)
    for q in (60, 85, 95):
        with Image.open(out / 'ai' / 'tiny' / f'q{q}__v0.jpg') as v: assert (v.format, jpeg_quality(v), v.size) == ('JPEG', q, (64, 48))


def test_batch_size_changes_only_floating_point_noise(tmp_path, tiny_backend):
    src = tmp_path / 'src'; src.mkdir()
    for i in range(5): noise_image(64, 64, seed=i).save(src / f'{i}.png')
    _run(src, tmp_path / 'b1', tiny_backend, batch_size=1, n_per_image=2)
    _run(src, tmp_path / 'b4', tiny_backend, batch_size=4, n_per_image=2)
    m1, m4 = read_manifest(tmp_path / 'b1'), read_manifest(tmp_path / 'b4')
    pd.testing.assert_frame_equal(m1.drop(columns='sha256'), m4.drop(columns='sha256'))   # same files, seeds, sizes
    for p in m1.loc[m1.label == 'ai', 'path']:
        a = np.asarray(Image.open(tmp_path / 'b1' / p), dtype=int); b = np.asarray(Image.open(tmp_path / 'b4' / p), dtype=int)
        assert np.abs(a - b).max() <= 3, p


def _gen_cmd(src, out, *extra):
    return [str(BIN / 'aidetect-gen'), 'variations', str(src), '--out', str(out), '--model', 'tiny', '--steps', '2',
            '--batch-size', '2', *extra]


@pytest.fixture
def many_photos(tmp_path):
    src = tmp_path / 'many'
    for i in range(24):
        (src / f'c{i % 3}').mkdir(parents=True, exist_ok=True)
        noise_image(64, 48, seed=100 + i).save(src / f'c{i % 3}' / f'{i:02d}.jpg', quality=85)
    return src


def _kill_when(proc, manifest: Path, rows: int, sig):
    "Send `sig` to `proc` once `manifest` has more than `rows` lines."
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) > rows:
            proc.send_signal(sig); break
        time.sleep(0.02)
    return proc.wait(60)


def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(many_photos, tmp_path):
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    subprocess.run(_gen_cmd(many_photos, whole, '-q'), check=True, capture_output=True)
    p = subprocess.Popen(_gen_cmd(many_photos, killed, '-q'), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _kill_when(p, killed / 'manifest.csv', 8, signal.SIGKILL) == -signal.SIGKILL
    assert 0 < len(read_manifest(killed)) < 48                  # it really was cut off mid-way
    r = subprocess.run(_gen_cmd(many_photos, killed, '-q'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _files(killed) == _files(whole)                      # same files, same bytes, same (sorted) manifest
    m = read_manifest(killed)
    assert not m.path.duplicated().any() and len(m) == 48
    assert not any(p.name.endswith('.tmp') for p in killed.rglob('*'))


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(many_photos, tmp_path):
    out = tmp_path / 'ds'
    # As at a terminal: a shell running the tests in the background hands its children SIGINT ignored.
    p = subprocess.Popen(_gen_cmd(many_photos, out, '-q'), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rc = _kill_when(p, out / 'manifest.csv', 6, signal.SIGINT)
    err = p.stderr.read()
    assert rc == 130 and 'interrupted' in err and 'Traceback' not in err, err
    n = len(read_manifest(out))
    r = subprocess.run(_gen_cmd(many_photos, out, '-q'), capture_output=True, text=True)
    assert r.returncode == 0 and len(read_manifest(out)) == 48 and n < 48


def test_two_processes_under_accelerate_make_one_whole_manifest(many_photos, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    subprocess.run(_gen_cmd(many_photos, one, '-q'), check=True, capture_output=True)
    cmd = [str(BIN / 'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'data_gen', *_gen_cmd(many_photos, two, '-q')[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '[1/2]' in r.stderr and '[2/2]' in r.stderr             # both processes worked
    m1, m2 = read_manifest(one), read_manifest(two)
    assert len(m2) == 48 and not (two / '.parts').exists()
    pd.testing.assert_frame_equal(m1.drop(columns='sha256'), m2.drop(columns='sha256'))   # same seeds, same files


def _children(pid: int) -> list:
    "Pids of the processes whose parent is `pid` (from /proc)."
    out = []
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: stat = (d / 'stat').read_text()
            except OSError: continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid: out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    "Is process `pid` running (zombies count as gone)?"
    try: return (Path('/proc') / str(pid) / 'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


def test_a_second_writer_is_refused_at_once(many_photos, tmp_path):
    out = tmp_path / 'ds'
    # many steps: the first writer must still be writing when the second has started (imports take seconds)
    first = subprocess.Popen(_gen_cmd(many_photos, out, '-q', '--steps', '60'), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / 'manifest.csv').exists(): time.sleep(0.05)
        r = subprocess.run(_gen_cmd(many_photos, out, '-q'), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and f'being written by pid {first.pid}' in r.stderr and 'Traceback' not in r.stderr, r.stderr
        assert 'random weights' not in r.stderr    # refused before loading a model
    finally: first.kill(); first.wait()
    r = subprocess.run(_gen_cmd(many_photos, out, '-q'), capture_output=True, text=True)   # a killed writer's lock is taken over
    assert r.returncode == 0 and len(read_manifest(out)) == 48, r.stderr


def test_workers_stop_when_their_launcher_is_killed(many_photos, tmp_path):
    out = tmp_path / 'ds'
    cmd = [str(BIN / 'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'data_gen', *_gen_cmd(many_photos, out, '-q', '--steps', '8')[1:]]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, part = time.time() + 300, out / '.parts' / 'manifest.rank1.csv'
    while time.time() < deadline and not part.exists(): time.sleep(0.1)   # both workers are writing
    workers = _children(launcher.pid)   # torchrun's agent runs in the launcher; the workers are its children
    assert len(workers) >= 2, workers
    launcher.send_signal(signal.SIGKILL); launcher.wait()
    t = time.time()
    while time.time() - t < 15 and any(_alive(w) for w in workers): time.sleep(0.2)
    assert not any(_alive(w) for w in workers) and time.time() - t < 10
    r = subprocess.run(_gen_cmd(many_photos, out, '-q'), capture_output=True, text=True)   # and the rerun finishes the job
    assert r.returncode == 0 and len(read_manifest(out)) == 48, r.stderr


def test_safety_checker_blackouts_never_enter_the_dataset(photo_folder, tmp_path):
    from aidetect.gen.backends import SDBackend
    b = SDBackend('tiny', steps=2)
    with torch.no_grad(): b.pipe.safety_checker.concept_embeds_weights.fill_(-2.0)   # every image is flagged
    out = tmp_path / 'ds'
    s = _run(photo_folder, out, b, max_retries=2)
    m, rej = read_manifest(out), read_rejected(out)
    assert (m.label == 'ai').sum() == 0 and (m.label == 'real').sum() == 6
    assert s.retried == 12 and s.blacked_out == 6
    assert (rej.reason == 'safety-blackout').sum() == 6 and rej.detail.str.contains('3 times').all()
    s2 = _run(photo_folder, out, b, max_retries=2)                  # given-up variations are not retried forever
    assert s2.done == 0 and s2.retried == 0 and len(read_rejected(out)) == 6


def test_retry_after_a_blackout_keeps_the_next_seed(photo_folder, tmp_path):
    "Flag (by checker threshold) about half the images: the flagged ones come back from a later seed."
    from aidetect.gen.backends import SDBackend
    b = SDBackend('tiny', steps=2)
    sc = b.pipe.safety_checker
    scores = []   # first an unflagged run that records the checker's scores, to put the threshold between them
    real_gen = b.generate
    def spy(conds, seeds, w, h):
        out = real_gen(conds, seeds, w, h)
        fe = b.pipe.feature_extractor([v.image for v in out], return_tensors='pt')
        with torch.no_grad(): emb = sc.visual_projection(sc.vision_model(fe.pixel_values)[1])
        cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(sc.concept_embeds).t()
        scores.extend(cos[:, 0].tolist()); return out
    b.generate = spy
    _run(photo_folder, tmp_path / 'probe2', b)
    b.generate = real_gen
    with torch.no_grad(): sc.concept_embeds_weights.fill_(float(np.median(scores)))
    out = tmp_path / 'ds'
    s = _run(photo_folder, out, b, max_retries=5)
    m = read_manifest(out)
    ai = m[m.label == 'ai']
    assert s.retried > 0
    from aidetect.gen.plan import variant_seed
    first = {g: variant_seed(0, g, 0) for g in ai.group}
    assert (ai.seed != ai.group.map(first)).sum() > 0                 # some kept images come from a retry seed
    for p in ai.path: assert np.asarray(Image.open(out / p)).max() > 0   # no black image labelled AI


# --- other sources of images -------------------------------------------------------------------------------------

def test_import_pairs_by_stem_and_reports_orphans(tmp_path):
    from aidetect.gen.importer import import_variants
    real, var = tmp_path / 'real', tmp_path / 'dalle'
    for n in ('a', 'b', 'c'):
        (real / 'cat').mkdir(parents=True, exist_ok=True); noise_image(40, 30, seed=ord(n)).save(real / 'cat' / f'{n}.jpg', quality=88)
    var.mkdir()
    for n in ('a.png', 'a_1.png', 'b-v2.png', 'zzz.png'): noise_image(256, 256, seed=len(n)).save(var / n)
    s = import_variants(var, real, tmp_path / 'ds', 'dall-e-2', model='dall-e-2', size_policy='matched')
    m, rej = read_manifest(tmp_path / 'ds'), read_rejected(tmp_path / 'ds')
    assert (s.paired, s.orphans) == (3, 1)
    assert sorted(m.loc[m.label == 'ai', 'group']) == ['cat/a.jpg', 'cat/a.jpg', 'cat/b.jpg']
    assert rej.reason.tolist() == ['no-source'] and 'zzz' in rej.path[0]
    # matched: the 40x30 photo and its 256 px square variations meet at the photo's centre square
    assert (m.format == 'JPEG').all() and (m.width == 30).all() and (m.height == 30).all()
    assert set(m.loc[m.label == 'real', 'resample']) == {'crop'} and set(m.loc[m.label == 'ai', 'resample']) == {'down-lanczos'}


def test_changed_or_missing_files_are_redone_on_rerun(photo_folder, tmp_path, tiny_backend):
    out = tmp_path / 'ds'
    _run(photo_folder, out, tiny_backend)
    before = _files(out)
    m = read_manifest(out)
    ai, real = m.loc[m.label == 'ai', 'path'].iloc[0], m.loc[m.label == 'real', 'path'].iloc[1]
    (out / ai).write_bytes(b'damaged'); (out / real).unlink()
    s = _run(photo_folder, out, tiny_backend)
    assert (s.done, s.real) == (1, 1)
    assert _files(out) == before                                     # the very same bytes come back
