"""Training through evaluation, via the command line, on tiny datasets."""
import json
import numpy as np, pandas as pd
import pytest
from sklearn.metrics import accuracy_score, precision_score, recall_score, f1_score
from conftest import run_cli


@pytest.fixture(scope='module')
def model(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('models') / 'scenes'
    run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', out, '--no-pretrained', '--size', '32',
            '--bs', '16', '--epochs', '1', '--lr', '1e-3', '--aug', 'none', '--pickle', check=0)
    return out


def test_train_writes_the_pair_and_with_pickle_the_pkl(model):
    for ext in ('pkl', 'safetensors', 'json'): assert model.with_suffix(f'.{ext}').exists(), ext
    info = json.loads(model.with_suffix('.json').read_text())
    assert info['arch'] == 'resnet34' and info['vocab'] == ['real', 'ai'] and info['size'] == 32
    assert set(info['train_groups']).isdisjoint(info['valid_groups'])
    assert info['datasets'][0]['name'] == 'scenes-train' and len(info['datasets'][0]['manifest_sha256']) == 64


def test_eval_reads_the_model_and_writes_a_report(model, demo_data, tmp_path):
    rep = tmp_path / 'rep'
    p = run_cli('aidetect', 'eval', model, demo_data['scenes-test'], demo_data['textures'], '--report', rep, check=0)
    assert 'scenes-test' in p.stdout and 'textures' in p.stdout
    m, pr = pd.read_csv(rep / 'metrics.csv'), pd.read_csv(rep / 'predictions.csv')
    assert {'confusion_scenes-test.png', 'confusion_textures.png', 'report.md'} <= {f.name for f in rep.iterdir()}
    for name, d in pr.groupby('dataset'):                      # every number is sklearn's, from predictions.csv
        y, yhat = d.label == 'ai', d.prob_ai >= 0.5
        row = m.set_index('dataset').loc[name]
        assert row.n == len(d)
        np.testing.assert_allclose(row.accuracy, accuracy_score(y, yhat))
        np.testing.assert_allclose(row.recall, recall_score(y, yhat, zero_division=np.nan))
        np.testing.assert_allclose([row.precision, row.f1],
                                   [precision_score(y, yhat, zero_division=np.nan), f1_score(y, yhat, zero_division=np.nan)])


def test_eval_refuses_a_pickle_unless_asked(model, demo_data):
    p = run_cli('aidetect', 'eval', model.with_suffix('.pkl'), demo_data['textures'])
    assert p.returncode == 2 and 'pickle' in p.stderr and '--allow-pickle' in p.stderr
    run_cli('aidetect', 'eval', model.with_suffix('.pkl'), demo_data['textures'], '--allow-pickle', check=0)


def test_offline_pretrained_weights_error_explains_the_options(demo_data, tmp_path):
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'm', '--size', '32',
                env={'TORCH_HOME': str(tmp_path / 'torch')})   # an empty torch cache: the weights must be downloaded
    assert p.returncode == 2, p.stderr
    assert 'Traceback' not in p.stderr and 'URLError' not in p.stderr.split('(')[0]
    assert 'resnet34' in p.stderr and '--no-pretrained' in p.stderr and 'checkpoints' in p.stderr


def test_lr_find_falls_back_on_trivial_data(demo_data):
    from aidetect.train import train_detector, DEFAULT_LR
    with pytest.warns(UserWarning, match='lr_find could not suggest'):
        learn = train_detector(demo_data['scenes-test'], size=32, bs=64, epochs=1, freeze_epochs=0, pretrained=False,
                               lr_find_its=3, verbose=False, aug='none')
    assert learn.facts.lr == DEFAULT_LR


def test_predict_lists_broken_files_with_reasons(model, demo_data, tmp_path):
    d = tmp_path / 'imgs'; d.mkdir()
    real = sorted((demo_data['textures'] / 'real').rglob('*.png'))[:3]
    for f in real: (d / f.name).write_bytes(f.read_bytes())
    (d / 'broken.jpg').write_bytes(b'\xff\xd8\xffnot really')
    out = tmp_path / 'p.csv'
    run_cli('aidetect', 'predict', model, d, '--out', out, check=0)
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 4
    bad = df[df.path.str.endswith('broken.jpg')].iloc[0]
    assert bad.prob_ai == '' and bad.reason.split(':')[0] in ('truncated', 'unreadable', 'not-an-image')
    assert (df[df.reason == ''].prob_ai.astype(float).between(0, 1)).all()


def test_eval_report_svg_figures_roc_pr_and_every_file_named(model, demo_data, tmp_path):
    "--fig-format svg: every figure is SVG (ROC/PR curves among them), and report.md names every file in the folder."
    run_cli('aidetect', 'eval', model, demo_data['scenes-test'], demo_data['textures'], '--report', tmp_path / 'r',
            '--fig-format', 'svg', '--bootstrap', '0', check=0)
    names = sorted(p.name for p in (tmp_path / 'r').iterdir())
    figures = [n for n in names if n.endswith(('.png', '.svg', '.pdf'))]
    assert 'roc_pr.svg' in names and figures and all(n.endswith('.svg') or n.startswith('audit_') for n in figures), names
    assert (tmp_path / 'r' / 'roc_pr.svg').read_text().lstrip().startswith(('<?xml', '<svg'))
    md = (tmp_path / 'r' / 'report.md').read_text()
    assert all(f'`{n}`' in md for n in names), [n for n in names if f'`{n}`' not in md]
    p = run_cli('aidetect', 'eval', model, demo_data['textures'], '--report', tmp_path / 'x', '--fig-format', 'jpg')
    assert p.returncode == 2 and 'png, pdf, svg' in p.stderr and not (tmp_path / 'x').exists()


def test_predict_uses_the_models_threshold_unless_given(model, demo_data, tmp_path):
    "A model whose stored threshold is far from 0.5 labels at that threshold by default, at --threshold when given."
    import shutil
    m = tmp_path / 'm'
    shutil.copy(model.with_suffix('.safetensors'), m.with_suffix('.safetensors'))
    info = json.loads(model.with_suffix('.json').read_text())
    m.with_suffix('.json').write_text(json.dumps(dict(info, threshold=0.999, threshold_rule='a test rule')))
    d = demo_data['textures']
    own = run_cli('aidetect', 'predict', m, d, '--out', tmp_path / 'own.csv', check=0)
    given = run_cli('aidetect', 'predict', m, d, '--out', tmp_path / 'given.csv', '--threshold', '0.001', check=0)
    read = lambda f: pd.read_csv(f, keep_default_na=False).query("reason == ''").astype({'prob_ai': float})   # the images (a dataset folder also holds its CSVs)
    a, b = read(tmp_path / 'own.csv'), read(tmp_path / 'given.csv')
    assert (a.label == np.where(a.prob_ai >= 0.999, 'ai', 'real')).all() and (b.label == np.where(b.prob_ai >= 0.001, 'ai', 'real')).all()
    assert (a.label != b.label).any()   # the two thresholds really differ on these images
    assert "0.999 (the model's, tuned" in own.stderr and '0.001 (given)' in given.stderr
    (tmp_path / 'empty').mkdir()
    p = run_cli('aidetect', 'predict', m, tmp_path / 'empty')
    assert p.returncode == 2 and 'no files' in p.stderr and 'Traceback' not in p.stderr
