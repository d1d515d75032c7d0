"""The shortcut audit: matched datasets give the metadata nothing to go on; biased ones are caught, with the reason.
Every "at chance" check is two-sided (|AUC - 0.5| <= CHANCE) and has a positive control that must fail it."""
import io
import numpy as np, pandas as pd
import pytest
from PIL import Image
from conftest import run_cli
from aidetect.audit import CHANCE, audit, oof_scores
from aidetect.dataset import DatasetWriter, ai_path, read_manifest, real_path
from aidetect.images import encode_image


def at_chance(auc) -> bool: return abs(auc - 0.5) <= CHANCE


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
    assert at_chance(row.auc) and 'do not separate' in row.verdict, res.table
    assert len(res.pairs) == 0 and row.mismatched_groups == 0, res.pairs    # every group encoded alike
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
    pairs = pd.read_csv(tmp_path / 'rep' / 'audit_pairs.csv')   # the encoder check names every group, and why
    assert len(pairs) == 12 and pairs.differs.str.contains('format').all() and pairs.group.iloc[0] in p.stdout


def test_audit_of_a_missing_dataset_is_one_line(tmp_path):
    p = run_cli('aidetect', 'audit', tmp_path / 'nope')
    assert p.returncode == 2 and 'not an aidetect dataset' in p.stderr and 'Traceback' not in p.stderr


def _noise(i, w=32, h=32):
    return Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _dataset(out, n, ai_format=lambda i: 'PNG', real_only=False):
    "n groups of 32 px noise: real PNG and, unless `real_only`, an AI image in `ai_format(i)`."
    with DatasetWriter(out) as w:
        for i in range(n):
            w.write_file(real_path(f'{i}.png'), encode_image(_noise(i), 'PNG'), dict(label='real', group=str(i), domain='d'))
            if real_only: continue
            fmt = ai_format(i)
            w.write_file(ai_path('gen', f'{i}__v0.{fmt.lower()}'), encode_image(_noise(100 + i), fmt),
                         dict(label='ai', group=str(i), domain='d', generator='gen'))
    return out


def test_inverted_scores_fail_the_at_chance_check(tmp_path):
    "A leak read backwards is still a leak: the two-sided check and the verdict catch it; a one-sided one would not."
    from sklearn.metrics import roc_auc_score
    res = audit(_dataset(tmp_path / 'ds', 20, lambda i: 'JPEG'), bootstrap=0)
    y, s = (res.meta.label == 'ai').to_numpy(int), oof_scores(res.meta)
    auc, inverted = roc_auc_score(y, s), roc_auc_score(y, -s)
    assert auc >= 0.9 and inverted <= 0.1                    # the positive control, both ways round
    assert not at_chance(auc) and not at_chance(inverted)    # both fail the two-sided check ...
    assert inverted <= 0.6                                   # ... which the old one-sided check let through
    from aidetect.audit import verdict
    v = verdict(inverted, 0.0, 0.1, 'format', inverted)
    assert 'alone separate' in v and 'inverted' in v


def test_partly_separate_and_not_measurable_verdicts(tmp_path):
    "Half the AI images are JPEG among PNGs: AUC about 0.75, 'partly'; a dataset without AI images: 'not measurable'."
    res = audit(_dataset(tmp_path / 'half', 24, lambda i: 'JPEG' if i % 2 else 'PNG'), bootstrap=100)
    r = res.table.iloc[0]
    assert 0.6 < r.auc < 0.9 and 'partly separate' in r.verdict and r.best_feature in ('format', 'quality'), res.table
    assert r.mismatched_groups == 12 and set(res.pairs.group.astype(int) % 2) == {1}
    none = audit(_dataset(tmp_path / 'real-only', 6, real_only=True), bootstrap=100).table.iloc[0]
    assert none.verdict.startswith('not measurable') and np.isnan(none.auc)


def test_unreadable_files_are_listed_not_fatal(tmp_path):
    ds = _dataset(tmp_path / 'ds', 8)
    (ds / 'ai' / 'gen' / '3__v0.png').write_bytes(b'not an image')
    p = run_cli('aidetect', 'audit', ds, '--pixels', '--bootstrap', '0', '--report', tmp_path / 'rep', check=0)
    assert '1 unreadable file(s)' in p.stdout and 'ai/gen/3__v0.png' in p.stdout
    assert pd.read_csv(tmp_path / 'rep' / 'audit_unreadable.csv').path.tolist() == ['ai/gen/3__v0.png']
    t = pd.read_csv(tmp_path / 'rep' / 'audit.csv')
    assert t.kind.tolist() == ['metadata', 'pixels'] and (t.n_ai == 7).all()


def test_encoder_check_names_groups_and_what_differs(tmp_path):
    def jpeg(im, **kw): b = io.BytesIO(); im.save(b, 'JPEG', **kw); return b.getvalue()
    with DatasetWriter(tmp_path / 'ds') as w:
        for i, kw in enumerate([dict(quality=90), dict(quality=60), dict(quality=90, progressive=True)]):
            w.write_file(real_path(f'p{i}.jpg'), jpeg(_noise(i), quality=90), dict(label='real', group=f'p{i}', domain='d'))
            w.write_file(ai_path('gen', f'p{i}__v0.jpg'), jpeg(_noise(9 + i), **kw), dict(label='ai', group=f'p{i}', domain='d', generator='gen'))
    p = run_cli('aidetect', 'audit', tmp_path / 'ds', '--bootstrap', '0', check=0)
    assert '2 group(s) do not' in p.stdout and 'p1' in p.stdout and 'p2' in p.stdout, p.stdout
    res = audit(tmp_path / 'ds', bootstrap=0)
    assert res.pairs.set_index('group').differs.to_dict() == {'p1': 'tables', 'p2': 'progressive'}


def _leaky_import(out, leak, crop=64, per_photo=4):
    "An imported dataset of scikit-image photo tiles (PNG) whose AI images are the same tiles after `leak`, saved as PNG."
    from aidetect.demo import SAMPLE_PHOTOS, photo_crops
    from aidetect.gen.importer import import_variants
    for name in (n for names in SAMPLE_PHOTOS.values() for n in names):
        for i, tile in photo_crops(name, crop, per_photo, 3 * crop):
            for d, im in (('photos', tile), ('made', leak(tile))):
                (out / d / name).mkdir(parents=True, exist_ok=True); im.save(out / d / name / f'{name}_{i}.png')
    import_variants(out / 'made', out / 'photos', out / 'ds', generator='leak', size_policy='native')
    return out / 'ds'


def _down_up(im): return im.resize((im.width // 2, im.height // 2), Image.BICUBIC).resize(im.size, Image.BICUBIC)
def _jpeg50(im): b = io.BytesIO(); im.save(b, 'JPEG', quality=50); return Image.open(b).convert('RGB')


def test_an_unprocessed_import_is_at_chance_both_ways(tmp_path):
    "The null beside the leaks: AI = the tile mirrored (other pixels, the same history): neither audit separates."
    from PIL import ImageOps
    res = audit(_leaky_import(tmp_path, ImageOps.mirror), bootstrap=0, pixels=True)
    assert all(at_chance(a) for a in res.table.auc), res.table


@pytest.mark.parametrize('leak', [_down_up, _jpeg50], ids=['down-up-2x', 'jpeg-q50-as-png'])
def test_leaky_imports_are_caught_by_pixels_not_metadata(tmp_path, leak):
    ds = _leaky_import(tmp_path, leak)
    p = run_cli('aidetect', 'audit', ds, '--pixels', '--bootstrap', '200', '--report', tmp_path / 'rep', check=0)
    t = pd.read_csv(tmp_path / 'rep' / 'audit.csv').set_index('kind')
    assert at_chance(t.auc['metadata']) and 'metadata do not separate' in p.stdout, t    # two-sided
    assert t.auc['pixels'] >= 0.9 and not at_chance(t.auc_low['pixels']) and 'pixel statistics' in p.stdout, t
    assert t.mismatched_groups.max() == 0 and t.n_real['pixels'] == t.n_ai['pixels'] == 32
    for f in ('audit_spectra_ds.png', 'audit_gallery_ds.png', 'audit_ds.png'): assert (tmp_path / 'rep' / f).exists()
    assert '| ds | leak | pixels |' in (tmp_path / 'rep' / 'audit.md').read_text()


MAGIC = {'png': b'\x89PNG', 'pdf': b'%PDF'}


def _is_format(path, fmt) -> bool:
    "Whether the file at `path` starts as a `fmt` file does (SVG: an XML or svg tag)."
    head = path.read_bytes()[:200]
    return head.lstrip().startswith((b'<?xml', b'<svg')) if fmt == 'svg' else head.startswith(MAGIC[fmt])


def test_audit_plot_shows_shares_of_each_class_with_labelled_axes(tmp_path):
    "12 real and 4 AI images of identical files look identical as shares; whole numbers are bars; bytes per pixel is marked."
    import matplotlib.pyplot as plt
    from aidetect.audit import PLOTTED, plot_properties
    with DatasetWriter(tmp_path / 'ds') as w:
        for i in range(16):
            lab = 'real' if i < 12 else 'ai'
            path = real_path(f'{i}.jpg') if lab == 'real' else ai_path('gen', f'{i}__v0.jpg')
            w.write_file(path, encode_image(_noise(i % 4, 48, 32), 'JPEG', quality=90),
                         dict(label=lab, group=str(i), domain='d', generator='gen' if lab == 'ai' else ''))
    meta = audit(tmp_path / 'ds', bootstrap=0).meta
    fig = plot_properties(meta, 'ds')
    axs = {ax.get_xlabel(): ax for ax in fig.axes}
    assert set(axs) == set(PLOTTED.values()) and all(ax.get_ylabel() == 'share of the class' for ax in fig.axes)
    q = axs[PLOTTED['quality']]
    assert [t.get_text() for t in q.get_xticklabels()] == ['90']                 # one bar, not an axis from 89.6 to 90.4
    assert [p.get_height() for p in q.patches] == [1.0, 1.0]                       # shares: 12 real and 4 AI look alike
    assert [p.get_height() for p in axs[PLOTTED['format']].patches] == [1.0, 1.0]
    assert 'not used by the classifier' in axs[PLOTTED['bytes_per_pixel']].get_title()
    assert 'real (12 images)' in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


@pytest.mark.parametrize('fmt', ['svg', 'pdf'])
def test_audit_report_figures_in_the_format_asked_and_every_file_listed(tmp_path, fmt, capsys):
    from aidetect.audit import cli_audit
    ds = _dataset(tmp_path / 'ds', 6)
    cli_audit(str(ds), report=str(tmp_path / 'rep'), bootstrap=0, pixels=True, fig_format=fmt, dpi=60)
    out = capsys.readouterr().out
    figs = [p for p in (tmp_path / 'rep').iterdir() if p.suffix not in ('.csv', '.md')]
    assert len(figs) == 3 and all(p.suffix == f'.{fmt}' and _is_format(p, fmt) for p in figs)   # properties, spectra, gallery
    md = (tmp_path / 'rep' / 'audit.md').read_text()
    written = sorted(p.name for p in (tmp_path / 'rep').iterdir())
    assert [n for n in written if f'`{n}`' not in md] == []                    # audit.md names every file
    assert [n for n in written if n != 'audit.md' and n not in out] == []       # and so does the summary line
    with pytest.raises(Exception, match='--fig-format must be one of png, pdf, svg'):
        cli_audit(str(ds), report=str(tmp_path / 'rep2'), fig_format='jpg')
    assert not (tmp_path / 'rep2').exists()
