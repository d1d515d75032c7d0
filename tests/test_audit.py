"""The shortcut audit: matched datasets give the metadata nothing to go on; biased ones are caught, with the reason."""
import numpy as np, pandas as pd
import pytest
from PIL import Image
from conftest import run_cli
from aidetect.audit import audit
from aidetect.dataset import read_manifest


def _photo(w, h, seed):
    "A smooth photo-like image (low-frequency colour fields plus a little grain): small as a JPEG at any size."
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    grain = rng.normal(0, 4, (h, w, 1))
    return Image.fromarray(np.clip(np.asarray(small, dtype=float) + grain, 0, 255).astype(np.uint8))


@pytest.fixture(scope='module')
def mixed_photos(tmp_path_factory):
    "JPEG photos from 300 to 3000 px on the long side, landscape and portrait, at mixed qualities and subsampling."
    src = tmp_path_factory.mktemp('mixed') / 'photos'
    sizes = [(300, 200), (3000, 2000), (480, 640), (1024, 768), (2000, 3000), (640, 427), (1500, 1000), (350, 350),
             (2400, 1600), (800, 1200), (1920, 1080), (333, 500)]
    for i, (w, h) in enumerate(sizes):
        (src / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        _photo(w, h, i).save(src / f'c{i % 2}' / f'{i:02d}.jpg', quality=[60, 75, 85, 92, 95][i % 5], subsampling=i % 3)
    return src


def test_default_dataset_from_mixed_sizes_has_no_metadata_shortcut(mixed_photos, tmp_path, tiny_backend):
    from aidetect.gen.run import VariationJob, run_variations
    out = tmp_path / 'ds'
    run_variations(VariationJob(src=str(mixed_photos), out=str(out)), tiny_backend, progress=False, log=lambda m: None)
    m = read_manifest(out)
    ai = m[m.label == 'ai']
    assert len(ai) == 12 and not ai['resample'].str.contains('up').any()            # no AI image is upsampled
    for g, d in m.groupby('group'):
        assert d[['width', 'height', 'format']].drop_duplicates().shape[0] == 1, g     # each group: one size, one format
    res = audit(out, bootstrap=200)
    row = res.table.iloc[0]
    assert row.auc <= 0.6 and 'do not separate' in row.verdict, res.table
    meta = res.meta.set_index('path')
    for g, d in m.groupby('group'):   # same JPEG quality and subsampling within each group, whatever the source's
        assert meta.loc[d.path, ['quality', 'subsampling']].drop_duplicates().shape[0] == 1


def test_jpeg_real_and_png_ai_is_caught_and_explained(mixed_photos, tmp_path, tiny_backend):
    from aidetect.gen.run import VariationJob, run_variations
    out = tmp_path / 'biased'
    run_variations(VariationJob(src=str(mixed_photos), out=str(out), format='png', size_policy='native'), tiny_backend,
                   progress=False, log=lambda m: None)
    p = run_cli('aidetect', 'audit', out, '--bootstrap', '200', '--report', tmp_path / 'rep', check=0)
    t = pd.read_csv(tmp_path / 'rep' / 'audit.csv')
    assert t.auc.iloc[0] >= 0.9 and t.auc_low.iloc[0] <= t.auc.iloc[0] <= t.auc_high.iloc[0]
    assert 'separate the classes' in p.stdout and t.best_feature.iloc[0] in ('format', 'quality', 'subsampling', 'width', 'height')
    assert (tmp_path / 'rep' / 'audit_biased.png').exists() and 'AUC' in (tmp_path / 'rep' / 'audit.md').read_text()


def test_audit_of_a_missing_dataset_is_one_line(tmp_path):
    p = run_cli('aidetect', 'audit', tmp_path / 'nope')
    assert p.returncode == 2 and 'not an aidetect dataset' in p.stderr and 'Traceback' not in p.stderr
