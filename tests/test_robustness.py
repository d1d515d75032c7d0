"""Robustness: perturbations treat both classes alike, the clean row is `aidetect eval`, every number is sklearn's from
predictions.csv, attacks hurt, intervals behave, and bad input is one line."""
import io, json, shutil, warnings
import numpy as np, pandas as pd
import pytest, torch
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, precision_score, recall_score, f1_score, roc_auc_score,
                             average_precision_score, roc_curve)
from conftest import run_cli, sklearn_intervals
from aidetect.cli import main as aidetect_main
from aidetect.dataset import read_manifest, write_manifest, file_facts
from aidetect.demo import example_datasets, example_cnn
from aidetect.detector import load_detector
from aidetect.metrics import METRICS, CI_COLUMNS, group_resamples
from aidetect.evaluate import metrics_table
from aidetect.images import jpeg_quality, open_image
from aidetect.robustness import (PERTURBATIONS, attack, PixelSpaceModel, perturb, perturb_images, robustness,
                                 image_seeds)

SPEC = 'jpeg:50,30 noise:5 grayscale social fgsm:4 pgd:4'


@pytest.fixture(scope='module')
def example():
    d = example_datasets()
    return example_cnn(), {"scenes-test": d["scenes-test"], "textures": d["textures"]}   # a detector that learned the data


@pytest.fixture(scope='module')
def reports(example, tmp_path_factory):
    "`aidetect robustness` and `aidetect eval` on the example test sets, each with its report."
    model, sets = example
    out = tmp_path_factory.mktemp('reports')
    run_cli('aidetect', 'robustness', model, *sets.values(), '--perturb', *SPEC.split(), '--report', out / 'rob', check=0)
    run_cli('aidetect', 'eval', model, *sets.values(), '--report', out / 'eval', check=0)
    return out


def _copy_dataset(src, dst, rows):
    "A dataset folder at `dst` holding `rows` (manifest rows of `src`, possibly relabelled or renamed)."
    for r in rows:
        (dst / r['path']).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r.pop('_from'), dst / r['path'])
        r.update(file_facts(dst / r['path']))
    write_manifest(pd.DataFrame(rows), dst)
    return dst


def test_writes_every_file_offline(reports):
    names = {p.name for p in (reports / 'rob').iterdir()}
    assert {'robustness.csv', 'predictions.csv', 'unreadable.csv', 'reliability.png', 'report.md',
            'robustness_accuracy.png', 'robustness_roc_auc.png', 'robustness_attack_success.png'} <= names
    t = pd.read_csv(reports / 'rob' / 'robustness.csv')
    assert set(t.perturbation) == {'clean', 'jpeg', 'noise', 'grayscale', 'social', 'fgsm', 'pgd'}
    assert set(t.dataset) == {'scenes-test', 'textures', 'all'}
    assert set(t.setting) == {'none', 'both', 'ai-to-real', 'real-to-ai'}
    assert 'jpeg' in (reports / 'rob' / 'report.md').read_text()


def test_clean_row_equals_aidetect_eval(reports):
    rob = pd.read_csv(reports / 'rob' / 'robustness.csv')
    clean = rob[rob.perturbation == 'clean'].set_index('dataset')
    ev = pd.read_csv(reports / 'eval' / 'metrics.csv').set_index('dataset')
    cols = list(METRICS) + list(CI_COLUMNS)
    # same inputs, same model; P(AI) can differ in float32's last digits because the two commands batch the images
    # differently (CPU kernels' sums depend on the batch), so metrics built on P(AI) agree to ~1e-6, not bit for bit
    np.testing.assert_allclose(clean.loc[ev.index, cols].to_numpy(dtype=float), ev[cols].to_numpy(dtype=float),
                               rtol=0, atol=1e-5, equal_nan=True)


def _sklearn_row(d, tuned):
    "Every metric of predictions `d`, from sklearn (and the definitions in the notebook for the rest)."
    y, p = (d.label == 'ai').astype(int).to_numpy(), d.prob_ai.to_numpy()
    yhat = (p >= 0.5).astype(int)
    both = 0 < y.sum() < len(y)
    fpr, tpr, _ = roc_curve(y, p)
    share, mean_p = calibration_curve(y, p, n_bins=15, pos_label=1)
    size = np.bincount(np.clip(np.ceil(p * 15).astype(int) - 1, 0, 14), minlength=15)   # (lo, hi] bins, as sklearn
    ptp, pfp = (p * y).sum(), (p * (1 - y)).sum()
    pp, pr = ptp / (ptp + pfp), ptp / y.sum()
    return dict(accuracy=accuracy_score(y, yhat), real_accuracy=recall_score(y, yhat, pos_label=0),
                ai_accuracy=recall_score(y, yhat), precision=precision_score(y, yhat, zero_division=np.nan),
                recall=recall_score(y, yhat), f1=f1_score(y, yhat, zero_division=np.nan),
                roc_auc=roc_auc_score(y, p) if both else np.nan, average_precision=average_precision_score(y, p),
                prob_f1=2 * pp * pr / (pp + pr), tpr_at_5fpr=tpr[fpr <= 0.05].max(),
                ece=np.sum(size[size > 0] / len(y) * np.abs(share - mean_p)),
                accuracy_tuned=accuracy_score(y, p >= tuned),
                accuracy_oracle=max(accuracy_score(y, p >= c) for c in np.r_[np.unique(p), np.inf]))


def test_every_number_is_sklearn_from_predictions_csv(reports, example):
    t = pd.read_csv(reports / 'rob' / 'robustness.csv')
    pr = pd.read_csv(reports / 'rob' / 'predictions.csv')
    tuned = json.loads(open(example[0]).read())['threshold']
    key = ['perturbation', 'level', 'setting']
    clean = pr[pr.perturbation == 'clean'].set_index(['dataset', 'path']).prob_ai
    checked = 0
    for (pn, lv, st), g in pr.groupby(key, dropna=False):
        for ds in ['scenes-test', 'textures', 'all']:
            d = g if ds == 'all' else g[g.dataset == ds]
            row = t[(t.perturbation == pn) & (t.setting == st) & (t.dataset == ds) &
                    (t.level.isna() if pd.isna(lv) else t.level == lv)]
            assert len(row) == 1
            row = row.iloc[0]
            sk = _sklearn_row(d, tuned)
            np.testing.assert_allclose(row[list(sk)].to_numpy(dtype=float), list(sk.values()), rtol=1e-7, equal_nan=True,
                                       err_msg=f'{pn} {lv} {st} {ds}')   # the CSV keeps 9 significant digits
            assert accuracy_score(d.label == 'ai', d.prob_ai >= row.oracle_threshold) == pytest.approx(row.accuracy_oracle)
            if st in ('ai-to-real', 'real-to-ai'):          # attack success: right when clean, wrong when attacked
                a = d[d.label == st.split('-')[0]]
                p0 = clean.loc[list(zip(a.dataset, a.path))].to_numpy()
                right = (p0 >= 0.5) == (a.label == 'ai').to_numpy()
                wrong = (a.prob_ai.to_numpy() >= 0.5) != (a.label == 'ai').to_numpy()
                assert row.n_attacked == right.sum()
                assert row.attack_success == pytest.approx(wrong[right].mean()) if right.any() else np.isnan(row.attack_success)
            checked += 1
    assert checked == 3 * (1 + 2 + 1 + 1 + 1 + 2 * 2)   # datasets × (clean, jpeg×2, noise, grayscale, social, 2 attacks × 2)
    # the intervals of one row, by resampling source groups and asking sklearn
    row = t[(t.perturbation == 'jpeg') & (t.level == 30) & (t.dataset == 'all')].iloc[0]
    d = pr[(pr.perturbation == 'jpeg') & (pr.level == 30)].reset_index(drop=True)
    counts, codes = group_resamples(d.domain + ':' + d.group, 1000, 0)
    expect = sklearn_intervals(d, counts, codes)
    np.testing.assert_allclose(row[list(CI_COLUMNS)].to_numpy(dtype=float), expect, rtol=1e-7)


def test_perturbations_hit_both_classes_identically(example, tmp_path):
    "AI images that are byte copies of real ones get the same transform, parameters and seed, so the same P(AI)."
    model, sets = example
    src = sets['textures']
    real = read_manifest(src).query("label == 'real'")
    rows = []
    for r in real.to_dict('records'):
        rows.append({**r, '_from': r['path']})
        rows.append({**r, 'label': 'ai', 'generator': 'copy', '_from': r['path'], 'path': 'ai/copy/' + r['path']})
    twins = _copy_dataset(src, tmp_path / 'twins', rows)
    res = robustness(model, {'twins': twins}, 'jpeg:30 webp:50 downscale:0.5 blur:2 noise:10 crop grayscale social',
                     bootstrap=0, progress=False)
    p = res.preds.assign(orig=lambda d: d.path.str.replace('ai/copy/', '', regex=False), level=res.preds.level.fillna(-1))
    wide = p.pivot_table(index=['perturbation', 'level', 'orig'], columns='label', values='prob_ai')
    assert len(wide) == 9 * len(real) and not wide.isna().any().any()
    np.testing.assert_array_equal(wide['ai'].to_numpy(), wide['real'].to_numpy())
    seeds = p.pivot_table(index=['perturbation', 'orig'], columns='label', values='image_seed')
    assert (seeds['ai'] == seeds['real']).all() and seeds['real'].nunique() == len(real)   # per image, not per class
    # and the function itself never sees more than the image and its seed
    ims = [open_image(src / r) for r in real.path]
    s = image_seeds(real)
    a = perturb_images(ims, ['real'] * len(ims), s, 'noise', 10)
    b = perturb_images(ims, ['ai'] * len(ims), s, 'noise', 10)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(ims[0]))


def test_jpeg_q30_output_is_jpeg_q30(example):
    im = open_image(next((example[1]['textures'] / 'real').rglob('*.*')))
    for q in (95, 75, 50, 30):
        assert abs(jpeg_quality(perturb(im, 'jpeg', q)) - q) <= 1
    assert jpeg_quality(perturb(im, 'social', 2)) == 75
    assert perturb(im, 'webp', 50).format == 'WEBP'


def test_fakes_only_leaves_real_images_byte_identical(example):
    model, sets = example
    m = read_manifest(sets['scenes-test'])
    ims = [open_image(sets['scenes-test'] / p) for p in m.path]
    before = [np.asarray(im).copy() for im in ims]
    out = perturb_images(ims, m.label, image_seeds(m), 'jpeg', 30, fakes_only=True)
    for o, b, label in zip(out, before, m.label):
        assert np.array_equal(np.asarray(o), b) == (label == 'real')
    res = robustness(model, sets, 'jpeg:30 blur:3', fakes_only=True, bootstrap=0, progress=False)
    assert set(res.table.setting) == {'none', 'fakes-only'}
    w = res.preds.pivot_table(index=['dataset', 'path', 'label'], columns='perturbation', values='prob_ai').reset_index()
    r, a = w[w.label == 'real'], w[w.label == 'ai']
    assert (r.jpeg == r.clean).all() and (r.blur == r.clean).all()
    assert (a.blur != a.clean).any()


@pytest.mark.parametrize('method', ['fgsm', 'pgd'])
def test_the_attack_raises_the_loss(example, method):
    model, sets = example
    det = load_detector(model, device='cpu')
    m = read_manifest(sets['scenes-test'])
    x = torch.stack([det.prepare(open_image(sets['scenes-test'] / p)) for p in m.path])
    y = torch.tensor([det.vocab.index(l) for l in m.label])
    adv = attack(det, x, m.label, method, 4)
    net = PixelSpaceModel(det)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(net(x.float() / 255), y)
        after = torch.nn.functional.cross_entropy(net(adv), y)
    assert after > before + 1e-3                      # an attack that does nothing fails here
    assert (adv - x.float() / 255).abs().max() <= 4 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_interval_contains_the_estimate_and_narrows_as_n_grows():
    rng = np.random.default_rng(0)
    def preds(n_groups):
        y = np.tile([0, 1], n_groups)                 # a real photo and its variation per group
        p = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
        return pd.DataFrame(dict(dataset='d', domain='x', group=np.repeat(np.arange(n_groups), 2),
                                 label=np.where(y == 1, 'ai', 'real'), prob_ai=p))
    small, big = (metrics_table(preds(n), bootstrap=1000).iloc[0] for n in (20, 500))
    for m in ('accuracy', 'roc_auc', 'average_precision'):
        for r in (small, big): assert r[f'{m}_lo'] <= r[m] <= r[f'{m}_hi'], m
        assert big[f'{m}_hi'] - big[f'{m}_lo'] < (small[f'{m}_hi'] - small[f'{m}_lo']) / 2, m


@pytest.mark.parametrize('args,message', [
    (['--perturb', 'jpg:50'], "unknown perturbation 'jpg'"),
    (['--perturb', 'jpeg:150'], 'jpeg level must be a whole number in [1, 100]'),
    (['--perturb', 'blur:1', 'pgd:0'], 'pgd level must be in (0, 255]'),
    (['--perturb', 'fgsm:300'], 'fgsm level must be in (0, 255]'),
    (['--bootstrap', '-1'], 'bootstrap must be at least 0'),
])
def test_bad_input_is_one_clear_line(example, args, message, capsys):
    model, sets = example
    assert aidetect_main(['robustness', str(model), str(sets['textures']), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('aidetect: error:') and message in err and len(err.strip().splitlines()) == 1, err


def test_missing_model_is_one_line_from_the_console_script(example, tmp_path):
    p = run_cli('aidetect', 'robustness', tmp_path / 'nope', example[1]['textures'], '--perturb', 'jpeg:50')
    assert p.returncode == 2 and p.stderr.startswith('aidetect: error: no detector at') and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_help_documents_the_perturb_syntax():
    p = run_cli('aidetect', 'robustness', '--help', check=0)
    assert 'NAME:L1,L2' in p.stdout and 'jpeg:90,50' in p.stdout and '--fakes-only' in p.stdout


def test_unreadable_images_are_listed_not_fatal(example, tmp_path):
    model, sets = example
    src = sets['textures']
    m = read_manifest(src)
    rows = [{**r, '_from': r['path']} for r in m.to_dict('records')]
    ds = _copy_dataset(src, tmp_path / 'broken', rows)
    (ds / m.path[0]).write_bytes((ds / m.path[0]).read_bytes()[:40])   # truncated
    (ds / m.path[1]).unlink()                                            # missing
    res = robustness(model, {'broken': ds}, 'blur:1', bootstrap=0, progress=False)
    assert sorted(res.unreadable.path) == sorted(m.path[:2])
    assert res.table.set_index(['perturbation', 'dataset']).loc[('blur', 'broken'), 'n'] == len(m) - 2


def test_plots_put_the_real_levels_on_x_and_never_a_threshold(reports):
    import matplotlib.pyplot as plt
    from aidetect.robustness import plot_robustness
    names = {p.name for p in (reports / 'rob').iterdir()}
    assert not any('threshold' in n for n in names)                                # a threshold is not a score
    t = pd.read_csv(reports / 'rob' / 'robustness.csv')
    fig = plot_robustness(t, 'accuracy')
    axs = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axs) == {'jpeg', 'noise', 'grayscale', 'social', 'fgsm ai-to-real', 'fgsm real-to-ai', 'pgd ai-to-real',
                        'pgd real-to-ai'}                                           # one panel per perturbation (and attack side)
    assert list(axs['jpeg'].get_xticks()) == [30, 50] and axs['jpeg'].xaxis_inverted()   # quality 30 (stronger) on the right
    assert [t.get_text() for t in axs['noise'].get_xticklabels()] == ['5']
    assert all(ax.get_xlabel() for ax in axs.values()) and fig.axes[0].get_ylabel() == 'accuracy'
    j = t[(t.perturbation == 'jpeg') & (t.dataset == 'textures')].sort_values('level')
    line = axs['jpeg'].lines[2]                                                     # the second dataset's line, after its
    assert list(line.get_xdata()) == [30, 50] and np.allclose(line.get_ydata(), j.accuracy)   # first dataset's clean line
    clean = t[(t.perturbation == 'clean') & (t.dataset == 'textures')].accuracy.item()
    assert axs['jpeg'].lines[3].get_ydata()[0] == clean and axs['jpeg'].lines[3].get_linestyle() == '--'
    assert len(axs['jpeg'].collections) == 2                                        # a bootstrap band per dataset
    with pytest.raises(Exception, match="'oracle_threshold' is not a metric to plot"): plot_robustness(t, 'oracle_threshold')
    plt.close(fig)


def test_report_lists_every_file_and_describes_only_what_ran(reports, example, tmp_path):
    md = (reports / 'rob' / 'report.md').read_text()
    assert [p.name for p in (reports / 'rob').iterdir() if f'`{p.name}`' not in md] == []
    assert 'FGSM' in md and 'PGD' in md                                             # attacks ran here ...
    res = robustness(*example, perturb='blur:1,2', bootstrap=0, progress=False)
    files = res.save(tmp_path / 'r', 'svg', 60)
    md = files['report'].read_text()
    assert not any(w in md for w in ('FGSM', 'PGD', 'white-box', 'ai-to-real'))       # ... and are not described where none did
    assert '- `blur`: 1, 2 (σ in px)' in md
    figs = [p for p in (tmp_path / 'r').iterdir() if p.suffix not in ('.csv', '.md')]
    assert figs and all(p.suffix == '.svg' and p.read_bytes()[:200].lstrip().startswith((b'<?xml', b'<svg')) for p in figs)
    assert [p.name for p in (tmp_path / 'r').iterdir() if f'`{p.name}`' not in md] == []
