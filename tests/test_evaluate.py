"""Evaluation: every number is sklearn's from the predictions; degenerate data reads well; class order never flips."""
import warnings
import numpy as np, pandas as pd
import pytest, torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, precision_score, recall_score, f1_score, roc_auc_score,
                             average_precision_score, roc_curve)
from aidetect.metrics import binary_metrics, probabilistic_f1, group_resamples, CI_COLUMNS
from aidetect.evaluate import (metrics_table, confusion_state, confusion_counts, evaluate, format_table, transfer_matrix,
                               transfer_heatmap)
from aidetect.detector import Detector, detector_pipeline
from aidetect.dataset import read_manifest, write_manifest
from aidetect.train import train_detector
from conftest import sklearn_intervals


def _ece(y, p, bins=15):
    "ECE by hand: sklearn's calibration_curve per bin, weighted by the bin's share of images."
    share, mean_p = calibration_curve(y, p, n_bins=bins, pos_label=1)
    size = np.array([((p > lo) | (lo == 0) & (p >= 0)) & (p <= hi) for lo, hi in
                     zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:])]).sum(1)
    return float(np.sum(size[size > 0] / len(y) * np.abs(share - mean_p)))


def _oracle(y, p):
    "Best accuracy over every cut, tried one by one with accuracy_score."
    cuts = np.r_[np.unique(p), np.inf]
    return max(accuracy_score(y, p >= c) for c in cuts)


def _sk(y, p, th, tuned=None):
    yhat = (p >= th).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        both = 0 < y.sum() < len(y)
        fpr, tpr, _ = roc_curve(y, p) if both else (None, None, None)
        return dict(accuracy=accuracy_score(y, yhat), precision=precision_score(y, yhat, zero_division=np.nan),
                    recall=recall_score(y, yhat, zero_division=np.nan), f1=f1_score(y, yhat, zero_division=np.nan),
                    real_accuracy=recall_score(y, yhat, pos_label=0, zero_division=np.nan),
                    ai_accuracy=recall_score(y, yhat, pos_label=1, zero_division=np.nan),
                    roc_auc=roc_auc_score(y, p) if both else np.nan,
                    average_precision=average_precision_score(y, p) if y.sum() else np.nan,
                    tpr_at_5fpr=tpr[fpr <= 0.05].max() if both else np.nan, ece=_ece(y, p),
                    accuracy_tuned=accuracy_score(y, p >= tuned) if tuned is not None else np.nan,
                    accuracy_oracle=_oracle(y, p) if both else np.nan)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('threshold', [0.0, 0.3, 0.5, 0.9, 1.0])
def test_table_equals_sklearn_on_random_predictions(seed, threshold):
    rng = np.random.RandomState(seed)
    n = rng.randint(1, 40)
    preds = pd.DataFrame(dict(dataset=rng.choice(['a', 'b', 'c'], n), label=rng.choice(['real', 'ai'], n),
                              prob_ai=rng.rand(n).round(rng.choice([1, 6]))))   # rounding makes ties
    tuned = [None, 0.42][seed % 2]
    t = metrics_table(preds, threshold, tuned=tuned).set_index('dataset')
    assert list(t.index) == list(dict.fromkeys(preds.dataset)) + (['all'] if preds.dataset.nunique() > 1 else [])
    for d in t.index:
        g = preds if d == 'all' else preds[preds.dataset == d]
        y, p = (g.label == 'ai').astype(int).to_numpy(), g.prob_ai.to_numpy()
        sk = _sk(y, p, threshold, tuned)
        np.testing.assert_allclose(t.loc[d, list(sk)].to_numpy(dtype=float), list(sk.values()), equal_nan=True)
        assert (t.loc[d, 'n'], t.loc[d, 'n_ai']) == (len(g), y.sum())
        if not np.isnan(t.loc[d, 'accuracy_oracle']):   # the oracle threshold gives the oracle accuracy
            assert accuracy_score(y, p >= t.loc[d, 'oracle_threshold']) == pytest.approx(t.loc[d, 'accuracy_oracle'])


@pytest.mark.parametrize('seed', range(3))
def test_intervals_are_sklearn_on_resampled_source_groups(seed):
    rng = np.random.RandomState(seed)
    n_groups = rng.randint(5, 15)
    sizes = rng.randint(1, 4, n_groups)                  # a photo and 0-2 variations
    group = np.repeat([f'g{i}' for i in range(n_groups)], sizes)
    preds = pd.DataFrame(dict(dataset='d', domain='x', group=group, label=rng.choice(['real', 'ai'], len(group)),
                              prob_ai=rng.rand(len(group)).round(2)))
    B = 60
    t = metrics_table(preds, 0.5, bootstrap=B, seed=seed).iloc[0]
    counts, codes = group_resamples('x:' + preds.group, B, seed)
    expect = sklearn_intervals(preds, counts, codes)   # resample the rows themselves, then ask sklearn
    np.testing.assert_allclose(t[list(CI_COLUMNS)].to_numpy(dtype=float), expect, rtol=1e-9, equal_nan=True)


def test_intervals_agree_with_an_independent_group_bootstrap():
    """The project's intervals and the test's own group bootstrap (its own draws: numpy's multinomial over source
    photos) agree within Monte-Carlo error; a row bootstrap, which ignores that a photo and its variations go together,
    gives a clearly narrower accuracy interval, so the agreement is the grouping's doing."""
    rng = np.random.RandomState(7)
    n_groups, per = 80, 4   # a photo and three variations
    group = np.repeat([f'g{i}' for i in range(n_groups)], per)
    label = np.tile(['real', 'ai', 'ai', 'ai'], n_groups)
    hard = np.repeat(rng.normal(0.1, 0.3, n_groups), per)   # a photo the detector gets wrong, it gets wrong in every copy
    prob = np.clip(0.5 + np.where(label == 'ai', 1, -1) * hard + rng.normal(0, 0.05, len(group)), 0, 1)
    preds = pd.DataFrame(dict(dataset='d', domain='x', group=group, label=label, prob_ai=prob))
    B = 2000
    mine = metrics_table(preds, 0.5, bootstrap=B, seed=0).iloc[0][list(CI_COLUMNS)].to_numpy(dtype=float)
    own = np.random.default_rng(12345).multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=B)
    expect = sklearn_intervals(preds, own, pd.factorize(preds.group)[0])
    np.testing.assert_allclose(mine, expect, atol=0.03)
    rows = np.random.default_rng(1).multinomial(len(preds), np.full(len(preds), 1 / len(preds)), size=B)
    naive = sklearn_intervals(preds, rows, np.arange(len(preds)))
    width = lambda v: v[1] - v[0]   # accuracy's (lo, hi)
    assert width(naive) < 0.75 * width(expect), (width(naive), width(expect))
    assert abs(width(mine) - width(expect)) < abs(width(naive) - width(expect)) / 2   # a row bootstrap would not pass


def test_probabilistic_f1_by_hand():
    # pTP = .9 + .5 = 1.4, pFP = .2 + .1 = .3, pPrecision = 1.4/1.7, pRecall = 1.4/2
    pp, pr = 1.4 / 1.7, 1.4 / 2
    assert probabilistic_f1([1, 1, 0, 0], [0.9, 0.5, 0.2, 0.1]) == pytest.approx(2 * pp * pr / (pp + pr))
    assert probabilistic_f1([1, 0], [0.0, 0.0]) != probabilistic_f1([1, 0], [0.0, 0.0])   # undefined: NaN
    assert probabilistic_f1([1, 1], [1.0, 1.0]) == 1.0


@pytest.mark.parametrize('threshold,expected', [(0.0, [[0, 2], [0, 3]]), (0.35, [[1, 1], [1, 2]]),
                                                (0.65, [[2, 0], [2, 1]]), (1.01, [[2, 0], [3, 0]])])
def test_widget_update_gives_the_right_matrix(threshold, expected):
    preds = pd.DataFrame(dict(dataset='d', label=['real', 'real', 'ai', 'ai', 'ai'], path=list('abcde'),
                              prob_ai=[0.1, 0.4, 0.3, 0.6, 0.7]))
    st = confusion_state(preds, 'd', threshold)
    assert st['matrix'].tolist() == expected
    assert st['metrics']['n'] == 5 and len(st['mistakes']) == expected[0][1] + expected[1][0]
    assert confusion_state(preds, 'all', threshold)['matrix'].tolist() == expected


def test_degenerate_datasets_give_readable_rows(demo_data, tmp_path):
    learn = train_detector(demo_data['scenes-train'], size=32, bs=16, epochs=1, freeze_epochs=0, pretrained=False,
                           lr=1e-3, verbose=False)
    m = read_manifest(demo_data['textures'])
    only_real, empty = tmp_path / 'only-real', tmp_path / 'empty'
    real = m[m.label == 'real']
    for _, r in real.iterrows():
        (only_real / r.path).parent.mkdir(parents=True, exist_ok=True)
        (only_real / r.path).write_bytes((demo_data['textures'] / r.path).read_bytes())
    (only_real / real.path.iloc[0]).write_bytes(b'')                  # and one image that went bad
    write_manifest(real, only_real); write_manifest(m.iloc[:0], empty)
    res = evaluate(learn, {'only-real': only_real, 'empty': empty}, progress=False)
    t = res.table.set_index('dataset')
    assert t.loc['only-real', 'n'] == len(real) - 1 and t.loc['only-real', 'unreadable'] == 1
    assert np.isnan(t.loc['only-real', 'roc_auc']) and t.loc['empty', 'n'] == 0
    text = format_table(res.table)
    assert 'n/a' in text and 'nan' not in text.lower()
    assert res.unreadable.reason.iloc[0].startswith('empty-file')
    files = res.save(tmp_path / 'report')                              # plots and report files for empty sets too
    assert len(files['confusion']) == 2 and 'n/a' in files['report'].read_text()


def test_overlap_with_training_groups_is_warned(demo_data):
    learn = train_detector(demo_data['scenes-train'], size=32, bs=16, epochs=1, freeze_epochs=0, pretrained=False,
                           lr=1e-3, verbose=False)
    with pytest.warns(UserWarning, match="in the model's training data"):
        evaluate(learn, {'same': demo_data['scenes-train']}, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                 # held-out groups: no warning
        evaluate(learn, {'held-out': demo_data['scenes-test']}, progress=False)


def test_class_order_is_read_from_the_model():
    class Const(torch.nn.Module):
        def forward(self, x): return torch.tensor([[2.0, 0.0]]).repeat(len(x), 1)
    x = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    ai_first = Detector(Const(), detector_pipeline('none', 8), [0, 0, 0], [1, 1, 1], vocab=['ai', 'real'], device='cpu')
    real_first = Detector(Const(), detector_pipeline('none', 8), [0, 0, 0], [1, 1, 1], vocab=['real', 'ai'], device='cpu')
    assert (ai_first.predict_batch(x) > 0.8).all() and (real_first.predict_batch(x) < 0.2).all()


def test_transfer_matrix_and_heatmap(demo_data, tmp_path):
    a = train_detector(demo_data['scenes-train'], size=32, bs=16, epochs=1, freeze_epochs=0, pretrained=False, lr=1e-3, verbose=False)
    b = train_detector([demo_data['scenes-train'], demo_data['textures']], size=32, bs=16, epochs=1, freeze_epochs=0,
                       pretrained=False, lr=1e-3, verbose=False)
    tm = transfer_matrix({'scenes': a, 'scenes+textures': b}, {'scenes-test': demo_data['scenes-test'], 'textures': demo_data['textures']})
    assert tm[['model', 'dataset']].values.tolist() == [['scenes', 'scenes-test'], ['scenes', 'textures'],
                                                         ['scenes+textures', 'scenes-test'], ['scenes+textures', 'textures']]
    fig = transfer_heatmap(tm, 'f1')
    fig.savefig(tmp_path / 'h.png')
    assert (tmp_path / 'h.png').stat().st_size > 1000


def test_a_multi_generator_test_set_is_broken_down_per_generator_with_its_kind(tmp_path):
    "Each generator's AI images against the same real images, recomputed here with sklearn; the control says so."
    from types import SimpleNamespace
    from aidetect.evaluate import EvalResult, write_report
    rng = np.random.default_rng(0)
    real = pd.DataFrame(dict(path=[f'r{i}' for i in range(8)], label='real', generator='', kind='', prob_ai=rng.uniform(0, .6, 8)))
    gens = [pd.DataFrame(dict(path=[f'{g}{i}' for i in range(8)], label='ai', generator=g, kind=k, prob_ai=rng.uniform(lo, 1, 8)))
            for g, k, lo in (('sd', 'generation', .3), ('identity', 'control', 0.))]
    preds = pd.concat([real, *gens], ignore_index=True).assign(dataset='t', category='', domain='d',
                                                               group=lambda d: d.path.str[-1])
    res = EvalResult(preds, 0.5, SimpleNamespace(info={}), pd.DataFrame(columns=['dataset', 'path', 'reason']),
                     {'t': dict(path=str(tmp_path), n=len(preds), manifest_sha256='-')})
    t = res.by_generator().set_index('generator')
    assert t.loc['identity', 'kind'] == 'control' and t.loc['sd', 'kind'] == 'generation'
    for g in ('sd', 'identity'):
        part = preds[(preds.label == 'real') | (preds.generator == g)]
        y = (part.label == 'ai').astype(int)
        assert t.loc[g, 'n'] == 16 and np.isclose(t.loc[g, 'roc_auc'], roc_auc_score(y, part.prob_ai))
        assert np.isclose(t.loc[g, 'accuracy'], accuracy_score(y, part.prob_ai >= 0.5))
    files = write_report(res, tmp_path, audit=False)
    assert pd.read_csv(files['by_generator']).generator.tolist() == ['sd', 'identity']
    assert '## Per generator' in files['report'].read_text()


def _two_sets(tmp_path, seed=0):
    "An `EvalResult` of random predictions on two small test sets (one with P(AI) exactly 0 and 1), no model needed."
    from types import SimpleNamespace
    from aidetect.evaluate import EvalResult
    rng = np.random.default_rng(seed)
    parts = []
    for name, n in (('a', 20), ('b', 12)):
        y = np.arange(n) % 2
        p = np.clip(y * 0.6 + rng.uniform(0, 0.4, n), 0, 1)
        p[:2] = [0.0, 1.0]
        parts.append(pd.DataFrame(dict(path=[f'{name}{i}' for i in range(n)], label=np.where(y, 'ai', 'real'), prob_ai=p,
                                       dataset=name, category='', domain='d', generator='', kind='', group=[str(i) for i in range(n)])))
    preds = pd.concat(parts, ignore_index=True)
    return EvalResult(preds, 0.5, SimpleNamespace(info={}), pd.DataFrame(columns=['dataset', 'path', 'reason']),
                      {k: dict(path=str(tmp_path), n=20, manifest_sha256='-') for k in ('a', 'b')}, bootstrap=0)


@pytest.mark.parametrize('fmt', ['png', 'pdf', 'svg'])
def test_report_figures_are_written_in_the_format_asked_and_listed(tmp_path, fmt):
    from aidetect.evaluate import write_report
    files = write_report(_two_sets(tmp_path), tmp_path / 'r', audit=False, fig_format=fmt, dpi=60)
    figs = sorted(p.name for p in (tmp_path / 'r').iterdir() if p.suffix not in ('.csv', '.md'))
    assert figs == sorted(f'{n}.{fmt}' for n in ('confusion_a', 'confusion_b', 'reliability', 'roc_pr'))
    head = {p: (tmp_path / 'r' / p).read_bytes()[:100] for p in figs}
    ok = {'png': lambda h: h.startswith(b'\x89PNG'), 'pdf': lambda h: h.startswith(b'%PDF'),
          'svg': lambda h: h.lstrip().startswith((b'<?xml', b'<svg'))}[fmt]
    assert all(ok(h) for h in head.values()), head
    md = files['report'].read_text()
    assert [p.name for p in (tmp_path / 'r').iterdir() if f'`{p.name}`' not in md] == []


def test_eval_refuses_a_bad_figure_format_or_dpi_before_any_work(tmp_path):
    from aidetect.core import AidetectError
    from aidetect.evaluate import cli_eval
    with pytest.raises(AidetectError, match='--fig-format must be one of png, pdf, svg'):
        cli_eval(str(tmp_path / 'no-model'), str(tmp_path), report=str(tmp_path / 'r'), fig_format='jpeg')
    with pytest.raises(AidetectError, match=r'dpi must be in \[10, 2400\]'):
        cli_eval(str(tmp_path / 'no-model'), str(tmp_path), report=str(tmp_path / 'r'), dpi=0)
    assert not (tmp_path / 'r').exists()


def test_reliability_is_a_panel_per_dataset_with_bin_counts_and_nothing_clipped(tmp_path):
    import matplotlib.pyplot as plt
    from aidetect.evaluate import plot_reliability
    res = _two_sets(tmp_path)
    fig = plot_reliability(res.preds)
    curves, counts = fig.axes[::2], fig.axes[1::2]
    assert [ax.get_title().split(':')[0] for ax in curves] == ['a', 'b']          # one panel each, never on top of each other
    for ax, cax, (name, d) in zip(curves, counts, res.preds.groupby('dataset')):
        y = (d.label == 'ai').astype(int)
        share, mean_p = calibration_curve(y, d.prob_ai, n_bins=15)                 # sklearn, the independent reference
        line = ax.lines[1]
        np.testing.assert_allclose(line.get_xdata(), mean_p); np.testing.assert_allclose(line.get_ydata(), share)
        assert not line.get_clip_on() and ax.get_ylim()[0] < 0 and ax.get_ylim()[1] > 1 and ax.get_xlim()[1] > 1
        assert sum(p.get_height() for p in cax.patches) == len(d)                  # every image in a bin below
        assert ax.get_ylabel() and cax.get_xlabel() and cax.get_ylabel()
    plt.close(fig)
