"""A manifest edited by hand: every reader names the line and what is wrong in one line; `aidetect-gen verify` lists
every problem and `--repair` fixes what the files can answer, atomically, keeping a backup."""
import pandas as pd
import pytest
from conftest import run_cli, noise_image
from aidetect.core import AidetectError, sha256_file
from aidetect.dataset import DatasetWriter, load_datasets, read_manifest, read_rows


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
