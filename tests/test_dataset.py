"""The dataset folder: manifests round-trip, appends survive a kill, splits never share a group."""
import pandas as pd
import pytest
from aidetect.core import AidetectError
from aidetect.dataset import (MANIFEST_COLUMNS, make_manifest, write_manifest, read_manifest, CsvAppender,
                               manifest_file, split_groups, group_split_idxs)


def _rows():
    odd = ['plain.jpg', 'with space.png', 'ünïcödé/名前.jpg', 'comma,quote"s.jpg', 'UPPER.JPEG']
    rows = []
    for i, name in enumerate(odd):
        rows.append(dict(path=f'real/{name}', label='real', group=name, domain='d', category='', width=10 + i,
                         height=20, format='JPEG', sha256='a' * 64))
        rows.append(dict(path=f'ai/tiny/{name}__v0.jpg', label='ai', group=name, domain='d', generator='tiny', model='tiny',
                         seed=2 ** 32 - 1 - i, steps=3, guidance=3.0, scheduler='DPMSolverMultistepScheduler',
                         width=10 + i, height=20, format='JPEG', sha256='b' * 64))
    return rows


def test_manifest_written_then_read_gives_the_same_rows(tmp_path):
    m = make_manifest(_rows())
    write_manifest(m, tmp_path)
    back = read_manifest(tmp_path)
    pd.testing.assert_frame_equal(back, m)
    assert list(back.columns) == list(MANIFEST_COLUMNS)


def test_appended_rows_read_back_and_a_cut_line_is_dropped(tmp_path):
    rows = _rows()
    with CsvAppender(manifest_file(tmp_path), MANIFEST_COLUMNS) as w:
        for r in rows[:6]: w.append(r)
    with open(manifest_file(tmp_path), 'a', encoding='utf-8') as f: f.write('ai/tiny/half')   # killed mid-write
    with CsvAppender(manifest_file(tmp_path), MANIFEST_COLUMNS) as w:
        assert not w.append(rows[0])                    # already there: not duplicated
        for r in rows[6:]: w.append(r)
    pd.testing.assert_frame_equal(read_manifest(tmp_path), make_manifest(rows))


def test_bad_manifests_are_refused(tmp_path):
    with pytest.raises(AidetectError, match='not an aidetect dataset'): read_manifest(tmp_path / 'missing')
    (tmp_path / 'manifest.csv').write_text('path,label,group\nx.jpg,fake,g\n')
    with pytest.raises(AidetectError, match='label'): read_manifest(tmp_path)


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('pct', [0.1, 0.2, 0.5])
def test_group_split_never_puts_a_group_on_both_sides(seed, pct):
    import random
    rnd = random.Random(seed)
    df = pd.DataFrame(dict(group=[f'g{rnd.randrange(40)}' for _ in range(200)]))
    tr, va = group_split_idxs(df, pct, seed)
    assert set(df.group[tr]).isdisjoint(df.group[va])
    assert sorted(tr + va) == list(range(200))
    assert va and tr
    # row order must not change which groups are held out
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    tr2, va2 = group_split_idxs(shuffled, pct, seed)
    assert set(shuffled.group[va2]) == set(df.group[va])
