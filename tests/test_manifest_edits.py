"""A manifest edited by hand: every reader names the line and what is wrong in one line; `aidetect-gen verify` lists
every problem and `--repair` fixes what the files can answer, atomically, keeping every backup and every removed row
whole; it never forgets a row for a file it cannot read or an image that is only big, nor most rows without --force."""
import errno, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from PIL import Image
from conftest import run_cli, noise_image
from aidetect.core import AidetectError, sha256_file
from aidetect.dataset import DatasetWriter, load_datasets, read_manifest, read_rows
from aidetect.verify import repair_manifest, verify_manifest


@pytest.fixture
def ds(tmp_path):
    "A small dataset: 3 groups of a real and an AI image (32 px PNGs); manifest.csv in the order written."
    d = tmp_path / 'ds'
    with DatasetWriter(d) as w:
        for i in range(3):
            for label in ('real', 'ai'):
                w.write_image(f'{label}/{i}.png', noise_image(32, 32, seed=i * 2 + (label == 'ai')), dict(format='PNG'),
                              dict(label=label, group=str(i), domain='d', generator='tiny' if label == 'ai' else ''))
    return d


def _edit(d, fn):
    m = read_rows(d / 'manifest.csv')
    m = fn(m)
    m.to_csv(d / 'manifest.csv', index=False)
    return m


def _set(row, col, value):
    def f(m): m.loc[row, col] = value; return m
    return f


# (edit, the reader's one line: what it must contain) -- row 1 is on line 3 of manifest.csv
FATAL = {
    'column missing': (lambda m: m.drop(columns='label'), "line 1: column 'label' is missing (the header has: path, group,"),
    'column renamed': (lambda m: m.rename(columns={'group': 'Group'}), "line 1: column 'Group' looks like 'group' renamed"),
    'label': (_set(1, 'label', 'fake'), "line 3: label 'fake' is neither 'real' nor 'ai'"),
    'path up': (_set(1, 'path', '../x.png'), "line 3: path '../x.png' leaves the dataset folder"),
    'path absolute': (_set(1, 'path', '/etc/x.png'), "line 3: path '/etc/x.png' is absolute"),
    'duplicate': (lambda m: pd.concat([m, m.iloc[[0]]]), "line 8: path 'real/0.png' is listed again (first on line 2)"),
    'group': (_set(1, 'group', ''), 'line 3: the group is empty'),
    'number': (_set(1, 'width', 'wide'), "line 3: width 'wide' is not a number"),
}


@pytest.mark.parametrize('edit', FATAL)
def test_each_hand_edit_is_one_line_naming_its_line(ds, edit):
    fn, want = FATAL[edit]
    _edit(ds, fn)
    for read in (read_manifest, load_datasets):
        with pytest.raises(AidetectError) as e: read(ds)
        msg = str(e.value)
        assert msg.startswith(f'{ds / "manifest.csv"}: {want}') and '\n' not in msg, msg
        assert f'aidetect-gen verify {ds}' in msg


def test_a_quoted_value_over_two_lines_keeps_line_numbers_true(ds):
    m = _edit(ds, lambda m: m.assign(prompt=['a\nb'] + [''] * 5))
    _edit(ds, _set(2, 'label', 'AI!'))
    with pytest.raises(AidetectError, match=r"line 5: label 'AI!'"): read_manifest(ds)   # row 2 starts on line 5


def test_the_files_are_left_to_verification_which_lists_every_problem(ds):
    (ds / 'ai' / '0.png').unlink()                                        # line 3
    noise_image(32, 32, seed=99).save(ds / 'real' / '1.png')              # line 4: the file replaced
    read_manifest(ds)                                                      # readers don't hash every file
    _edit(ds, lambda m: pd.concat([_set(5, 'label', 'fake')(m), m.iloc[[4]].assign(path='../up.png')]))   # lines 7, 8
    p = run_cli('aidetect-gen', 'verify', ds)
    lines = p.stdout.splitlines()
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert [l.split(':')[1] for l in lines] == ['3', '4', '7', '8'], lines
    assert 'ai/0.png is not in the dataset folder' in lines[0] and 'sha256' in lines[1] and 'on disk' in lines[1]
    assert "label 'fake'" in lines[2] and '[--repair' not in lines[2] and 'leaves the dataset folder' in lines[3]
    assert '4 problem(s)' in p.stderr and '3 of them repairable with --repair; 1 need a person' in p.stderr


def test_repair_fixes_from_the_files_atomically_with_a_backup(ds):
    before = (ds / 'manifest.csv').read_bytes()
    (ds / 'ai' / '0.png').unlink()                                        # a file gone: its row moves out
    noise_image(40, 32, seed=99).save(ds / 'real' / '1.png')              # a file changed: its facts recorded
    _edit(ds, lambda m: pd.concat([m, m.iloc[[4]]]).assign(label=lambda d: d.label.str.upper()))   # REAL/AI, a pasted row
    edited = (ds / 'manifest.csv').read_bytes()
    p = run_cli('aidetect-gen', 'verify', ds, '--repair')
    assert p.returncode == 0, p.stdout + p.stderr
    assert (ds / 'manifest.csv.bak').read_bytes() == edited != before
    m = read_manifest(ds)                                                  # readable again
    assert m.path.tolist() == ['real/0.png', 'real/1.png', 'ai/1.png', 'real/2.png', 'ai/2.png']
    assert m.label.tolist() == ['real', 'real', 'ai', 'real', 'ai']
    r1 = m.set_index('path').loc['real/1.png']
    assert (r1.sha256, r1.width, r1.height) == (sha256_file(ds / 'real' / '1.png'), 40, 32)
    removed = read_rows(ds / 'removed.csv')
    assert removed[['path', 'reason']].values.tolist() == [['ai/0.png', 'missing-file'], ['real/2.png', 'duplicate']]
    assert 'line 8 of manifest.csv' in removed.detail[1]
    assert 'repaired' in p.stdout and 'manifest.csv.bak' in p.stderr
    assert run_cli('aidetect-gen', 'verify', ds).returncode == 0            # nothing left
    assert not [f for f in ds.rglob('*.tmp')]


def test_repair_leaves_what_only_a_person_knows_and_says_so(ds):
    _edit(ds, _set(1, 'label', 'fake'))
    p = run_cli('aidetect-gen', 'verify', ds, '--repair')
    assert p.returncode == 1 and "3: label 'fake'" in p.stdout and '1 need a person' in p.stderr
    assert not (ds / 'manifest.csv.bak').exists()                          # nothing repaired: nothing rewritten


def _verify_failing_disk(ds, *flags, errno_=errno.EIO):
    "`aidetect-gen verify ds *flags` in a process where reading ai/1.png fails with `errno_` (a failing disk, a permission)."
    code = f"""import errno, os, pathlib, sys
from aidetect.gen.cli import main
_rb = pathlib.Path.read_bytes
def read_bytes(self):
    if self.as_posix().endswith('/ai/1.png'): raise OSError({errno_}, os.strerror({errno_}), str(self))
    return _rb(self)
pathlib.Path.read_bytes = read_bytes
sys.exit(main(sys.argv[1:]))"""
    return subprocess.run([sys.executable, '-c', code, 'verify', str(ds), *flags], capture_output=True, text=True, timeout=300)


def test_a_second_repair_keeps_the_first_backup_and_names_the_new_one(ds):
    _edit(ds, _set(0, 'label', 'REAL'))
    first = (ds / 'manifest.csv').read_bytes()
    assert run_cli('aidetect-gen', 'verify', ds, '--repair').returncode == 0
    _edit(ds, _set(1, 'label', ' AI '))
    second = (ds / 'manifest.csv').read_bytes()
    p = run_cli('aidetect-gen', 'verify', ds, '--repair')
    assert p.returncode == 0, p.stderr
    assert (ds / 'manifest.csv.bak').read_bytes() == first and (ds / 'manifest.csv.bak.1').read_bytes() == second != first
    assert f'the old manifest is kept as {ds / "manifest.csv.bak.1"}' in p.stderr and not (ds / 'manifest.csv.bak.2').exists()
    assert read_manifest(ds).label.tolist() == ['real', 'ai'] * 3


def test_removed_rows_are_kept_whole_and_can_be_put_back(ds):
    _edit(ds, lambda m: m.assign(prompt=[f'a prompt, {i}' for i in range(6)], seed=[str(10 + i) for i in range(6)]))
    rows = read_rows(ds / 'manifest.csv')
    saved = (ds / 'ai' / '1.png').read_bytes()
    (ds / 'ai' / '1.png').unlink()                                         # line 5
    assert repair_manifest(ds).backup == ds / 'manifest.csv.bak'
    removed = read_rows(ds / 'removed.csv')
    assert list(removed.columns) == list(rows.columns) + ['reason', 'detail']
    assert removed[list(rows.columns)].values.tolist() == rows.iloc[[3]].values.tolist()   # label, group, prompt, seed ...
    assert removed.reason.tolist() == ['missing-file'] and removed.detail[0].startswith('line 5 of manifest.csv: ai/1.png')
    (ds / 'ai' / '1.png').write_bytes(saved)                               # put back by hand: the file, and the row
    with open(ds / 'manifest.csv', 'a') as f: f.write(removed[list(rows.columns)].to_csv(index=False, header=False))
    assert verify_manifest(ds) == [] and set(read_manifest(ds).path) == set(rows.path)


@pytest.mark.parametrize('err', [errno.EIO, errno.EACCES])
def test_a_file_that_cannot_be_read_stops_the_repair_in_one_line_and_keeps_its_row(ds, err):
    (ds / 'real' / '0.png').unlink()                                       # a repair to do, so the refusal is the read's
    before = (ds / 'manifest.csv').read_bytes()
    for flags in ((), ('--repair',)):
        p = _verify_failing_disk(ds, *flags, errno_=err)
        assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
        assert p.stderr.splitlines() == [f"aidetect-gen: error: cannot read {ds.resolve() / 'ai' / '1.png'} ({os.strerror(err)}): "
                                         "fix its permissions or the disk, then verify again; the manifest was not changed"]
    assert (ds / 'manifest.csv').read_bytes() == before and not (ds / 'removed.csv').exists() and not (ds / 'manifest.csv.bak').exists()
    p = run_cli('aidetect-gen', 'verify', ds, '--repair')                 # the control: ai/1.png readable, the repair runs
    assert p.returncode == 0 and read_rows(ds / 'removed.csv').path.tolist() == ['real/0.png'], p.stderr


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0, reason='root reads a file whatever its mode')
def test_a_file_without_read_permission_is_no_missing_image(ds):
    f = ds / 'ai' / '2.png'
    f.chmod(0)
    try:
        p = run_cli('aidetect-gen', 'verify', ds, '--repair')
        assert p.returncode == 2 and f'cannot read {f.resolve()} (Permission denied)' in p.stderr, p.stderr
        assert 'ai/2.png' in read_rows(ds / 'manifest.csv').path.tolist() and not (ds / 'removed.csv').exists()
    finally: f.chmod(0o644)


def test_an_image_over_the_decompression_bomb_limit_is_reported_and_kept(ds, monkeypatch):
    noise_image(64, 64, seed=7).save(ds / 'ai' / '2.png')                # line 7: 4096 px, over twice the limit below
    (ds / 'real' / '0.png').unlink()                                       # line 2: a row to remove
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1500)                   # 32×32 images (1024 px) still open
    done, left, backup = repair_manifest(ds)
    assert [p.line for p in done] == [2] and [p.line for p in left] == [7] and backup is not None
    assert 'ai/2.png is bigger than PIL opens' in left[0].what and 'decompression-bomb' in left[0].what and not left[0].repair
    m = read_rows(ds / 'manifest.csv')
    assert m.path.tolist() == ['ai/0.png', 'real/1.png', 'ai/1.png', 'real/2.png', 'ai/2.png']
    assert read_rows(ds / 'removed.csv').path.tolist() == ['real/0.png']
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 10_000)                 # the control: under the limit it is a changed file
    assert [(p.line, p.repair) for p in verify_manifest(ds)] == [(6, 'record what is on disk')]


def test_a_corrupt_image_is_not_an_image_and_goes(ds):
    data = (ds / 'ai' / '2.png').read_bytes()
    (ds / 'ai' / '2.png').write_bytes(data[:len(data) // 2])              # cut short: decodes no more
    (ds / 'real' / '2.png').write_text('no picture')
    assert repair_manifest(ds).done
    assert read_rows(ds / 'removed.csv')[['path', 'reason']].values.tolist() == [['real/2.png', 'not-an-image'], ['ai/2.png', 'not-an-image']]
    assert 'truncated' in read_rows(ds / 'removed.csv').detail[1]


def test_repair_removes_more_than_half_of_the_rows_only_with_force(ds, tmp_path):
    before = (ds / 'manifest.csv').read_bytes()
    for d in ('real', 'ai'): (ds / d).rename(tmp_path / d)                 # the image folders moved (or not mounted)
    p = run_cli('aidetect-gen', 'verify', ds, '--repair')
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert 'would remove 6 of its 6 rows (6 missing-file); nothing was changed' in p.stderr and '--force' in p.stderr
    assert (ds / 'manifest.csv').read_bytes() == before and not (ds / 'removed.csv').exists() and not (ds / 'manifest.csv.bak').exists()
    (tmp_path / 'real').rename(ds / 'real')                                # half the rows' files back: exactly half may go
    assert run_cli('aidetect-gen', 'verify', ds, '--repair').returncode == 0
    assert read_rows(ds / 'manifest.csv').path.tolist() == ['real/0.png', 'real/1.png', 'real/2.png']
    (ds / 'real' / '2.png').unlink(); (ds / 'real' / '1.png').unlink()     # 2 of the 3 left: more than half
    assert run_cli('aidetect-gen', 'verify', ds, '--repair').returncode == 2
    p = run_cli('aidetect-gen', 'verify', ds, '--repair', '--force')
    assert p.returncode == 0 and read_rows(ds / 'manifest.csv').path.tolist() == ['real/0.png'], p.stderr
    assert len(read_rows(ds / 'removed.csv')) == 5 and (ds / 'manifest.csv.bak.1').exists()


def test_a_line_of_spaces_is_no_row_so_later_lines_keep_their_numbers(ds):
    _edit(ds, _set(2, 'label', 'fake'))                                    # row 2: line 4, and line 5 once a blank line is in
    text = (ds / 'manifest.csv').read_text().split('\n')
    (ds / 'manifest.csv').write_text('\n'.join(text[:2] + ['   '] + text[2:]))
    assert len(read_rows(ds / 'manifest.csv')) == 6                       # pandas skips the line of spaces
    with pytest.raises(AidetectError, match=r"line 5: label 'fake'"): read_manifest(ds)
    p = run_cli('aidetect-gen', 'verify', ds)
    assert p.returncode == 1 and p.stdout.splitlines() == [f"{ds / 'manifest.csv'}:5: label 'fake' is neither 'real' nor 'ai'"], p.stdout
