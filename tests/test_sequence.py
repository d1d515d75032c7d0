"""The incremental-domain study: step-based training, balanced batches, the watermark step, a sequence's split,
weights, resume and evaluation, and bad input on the command line."""
import json, random, shutil
import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from PIL import Image

import aidetect.sequence as sequence
import aidetect.train as train
import aidetect.data as data
import aidetect.augment as augment
from fastai.vision.all import PILImage
from aidetect.dataset import group_keys, load_datasets, read_manifest, split_dataset, write_manifest
from aidetect.script import run_cli as run_cli_here
from aidetect.cli import COMMANDS

# a small plain CNN from scratch at 32 px: 4 balanced steps of 8 images, validated every 2 steps
KW = dict(arch='simple_cnn', pretrained=False, size=32, bs=8, steps=4, eval_every=2, lr=1e-3, aug='none', verbose=False)


@pytest.fixture(scope='module')
def domains(demo_data, tmp_path_factory):
    "The demo's scenes as four one-photo domains, for training and for testing."
    root = tmp_path_factory.mktemp('domains')
    return (split_dataset(demo_data['scenes-train'], root / 'train', as_domain=True),
            split_dataset(demo_data['scenes-test'], root / 'test', as_domain=True))


@pytest.fixture(scope='module')
def three_steps(domains, tmp_path_factory):
    "A three-step sequence, the weights each step starts from recorded."
    out, starts = tmp_path_factory.mktemp('seq') / 'seq', []
    real = train.detector_learner
    def spy(*a, **k):
        learn = real(*a, **k)
        starts.append({n: v.detach().clone() for n, v in learn.model.state_dict().items()})
        return learn
    mp = pytest.MonkeyPatch()
    mp.setattr(train, 'detector_learner', spy)
    try: seq = sequence.train_incremental(list(domains[0].values())[:3], out, valid_pct=0.25, seed=0, **KW)
    finally: mp.undo()
    return seq, out, starts


def _weights(f):
    from safetensors.torch import load_file
    return load_file(str(f))


def test_each_step_starts_from_the_last(three_steps):
    seq, out, starts = three_steps
    assert [s['init'] for s in seq['steps']] == [None, seq['steps'][0]['model'], seq['steps'][1]['model']]
    for k in (1, 2):   # step k+1's first weights are step k's saved weights, exactly
        saved = _weights(out / f"{seq['steps'][k - 1]['model']}.safetensors")
        assert all(torch.equal(starts[k][n], saved[n]) for n in saved)
    first = _weights(out / f"{seq['steps'][0]['model']}.safetensors")   # and step 1 did train (it is not its start)
    assert not all(torch.equal(starts[0][n], first[n]) for n in first)


def test_validation_groups_never_train(three_steps, domains):
    seq, out, _ = three_steps
    valid = set(seq['valid_groups'])
    union = set(group_keys(load_datasets(list(domains[0].values())[:3])))
    assert valid and valid < union
    for s in seq['steps']:
        info = json.loads((out / f"{s['model']}.json").read_text())
        assert not set(info['train_groups']) & valid
        assert set(info['valid_groups']) <= valid
        assert {g.split(':')[0] for g in info['train_groups']} <= set(s['trained_on'])
    replayed = sequence.step_rows(seq, 3, replay=0.5)   # replay changes what trains, never the split
    assert not set(group_keys(replayed[~replayed.is_valid])) & valid


def test_balanced_batches_are_balanced(demo_data):
    "An unbalanced mix (real 3x AI in one domain, a second smaller domain): the sampler's draws are balanced."
    scenes, tex = load_datasets(demo_data['scenes-train']), load_datasets(demo_data['textures'])
    df = pd.concat([scenes[scenes.label == 'real']] * 3 + [scenes[scenes.label == 'ai'], tex], ignore_index=True)
    df['group'] = df['group'] + '#' + df.index.astype(str)
    df['is_valid'] = False
    df.loc[df.index[:4].tolist() + df.index[-4:].tolist(), 'is_valid'] = True
    dls = data.detector_dls(df, size=32, bs=8, aug='none', arch='simple_cnn', balance=True, draws=5 * 8, verbose=False)
    assert len(dls.train) == 5 and len(dls.valid_ds) == 8   # an epoch is 5 batches; validation is untouched
    rows = dls.train.items.reset_index(drop=True)
    drawn = rows.iloc[np.concatenate([dls.train.get_idxs() for _ in range(300)])]
    assert len(drawn) == 300 * 40
    by_class = drawn['label'].value_counts(normalize=True)
    assert abs(by_class['ai'] - 0.5) < 0.02
    for label in ('real', 'ai'):
        by_domain = drawn[drawn.label == label]['domain'].value_counts(normalize=True)
        assert set(by_domain.index) == {'scenes', 'textures'} and abs(by_domain['scenes'] - 0.5) < 0.03, by_domain


def test_early_stopping_restores_the_best(demo_data):
    learn = train.train_detector(demo_data['scenes-train'], **{**KW, 'steps': 20, 'eval_every': 1, 'lr': 3e-2},
                                 patience=1, seed=1)
    losses = [float(r[1]) for r in learn.recorder.values]
    assert len(losses) < 20 and learn.facts.schedule['steps_run'] == len(losses)   # it stopped early
    # patience 1: it stopped at the first validation that did not improve, and kept the one before it
    assert int(np.argmin(losses)) == len(losses) - 2 and learn.facts.best_epoch == int(np.argmin(losses))
    with learn.no_bar(): assert abs(learn.validate()[0] - min(losses)) < 1e-4   # the best checkpoint's weights


def test_watermark_changes_pixels_with_p(tmp_path):
    from skimage import data
    im = PILImage.create(data.astronaut()[128:384, 128:384])   # 256x256: the smallest the package takes
    wm = augment.RandomWatermark(p=0.2)
    random.seed(0)
    changed = [not np.array_equal(np.asarray(wm(im, split_idx=0)), np.asarray(im)) for _ in range(300)]
    assert abs(np.mean(changed) - 0.2) < 0.07, np.mean(changed)
    assert isinstance(augment.item_tfms('epstein', 32)[0], augment.RandomWatermark) and augment.item_tfms('epstein', 32)[0].p == 0.2


@pytest.mark.parametrize('method', ['dwtDct', 'dwtDctSvd'])
def test_watermark_payload_decodes_at_full_size(method):
    "invisible-watermark's own decoder reads the payload back from the recipe's output, at the photo's full size."
    from skimage import data
    wm = augment.RandomWatermark(p=1., method=method)
    random.seed(1)
    for photo in ('astronaut', 'rocket', 'brick'):   # photos dwtDct carries exactly (it fails on some others; see 20_train)
        im = PILImage.create(np.stack([getattr(data, photo)()] * 3, -1) if photo == 'brick' else getattr(data, photo)())
        out = wm(im, split_idx=0)
        assert out.size == im.size and augment.decode_watermark(out, method=method) == wm.payload


def test_killed_sequence_resumes(domains, tmp_path, monkeypatch):
    ds, out = list(domains[0].values())[:3], tmp_path / 'seq'
    calls, real = [], sequence.train_detector
    def killed_at_step_3(rows, **k):
        calls.append(k.get('init'))
        if len(calls) == 3: raise KeyboardInterrupt   # killed while training step 3
        return real(rows, **k)
    monkeypatch.setattr(sequence, 'train_detector', killed_at_step_3)
    with pytest.raises(KeyboardInterrupt): sequence.train_incremental(ds, out, valid_pct=0.25, seed=0, **KW)
    done = json.loads((out / 'sequence.json').read_text())
    assert [s['step'] for s in done['steps']] == [1, 2]
    stamps = {f.name: f.stat().st_mtime_ns for f in out.glob('step*')}
    calls.clear()
    monkeypatch.setattr(sequence, 'train_detector', lambda rows, **k: calls.append(k.get('init')) or real(rows, **k))
    seq = sequence.train_incremental(ds, out, valid_pct=0.25, seed=0, **KW)
    assert calls == [out / f"{done['steps'][1]['model']}.safetensors"]   # only step 3 trained, from step 2
    assert [s['step'] for s in seq['steps']] == [1, 2, 3] and seq['steps'][:2] == done['steps']
    assert all(f.stat().st_mtime_ns == stamps[f.name] for f in out.glob('step*') if f.name in stamps)
    assert not list(out.glob('.step-*'))   # no temporary files left


def test_sequence_eval_table_and_figure(three_steps, domains, tmp_path, capsys):
    seq, out, _ = three_steps
    tests = {n: d for n, d in list(domains[1].items())[:3]}
    rc = run_cli_here('aidetect', COMMANDS, ['eval', str(out / 'sequence.json'), *map(str, tests.values()),
                                             '--report', str(tmp_path / 'r')])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / 'r' / 'sequence_eval.csv')
    assert len(table) == 9 and table.groupby('step')['in_distribution'].sum().tolist() == [1, 2, 3]
    assert Image.open(tmp_path / 'r' / 'sequence.png').size[0] > 400
    preds = pd.read_csv(tmp_path / 'r' / 'predictions.csv')   # every cell of the table is sklearn's, from predictions.csv
    assert len(preds) == sum(len(load_datasets(d)) for d in tests.values()) * 3
    for (model, name), d in preds.groupby(['model', 'dataset']):
        row = table[(table.model == model) & (table.dataset == name)].iloc[0]
        y, p = (d.label == 'ai').to_numpy(), d.prob_ai.to_numpy()
        assert row.n == len(d)
        np.testing.assert_allclose(row.accuracy, accuracy_score(y, p >= 0.5))
        np.testing.assert_allclose(row.f1, f1_score(y, p >= 0.5, zero_division=np.nan), equal_nan=True)
        np.testing.assert_allclose(row.roc_auc, roc_auc_score(y, p) if 0 < y.sum() < len(y) else np.nan, equal_nan=True)
    fig = sequence.sequence_heatmaps(table)
    for ax, metric in zip(fig.axes, sequence.SEQUENCE_METRICS):
        grid = sequence.sequence_grid(table, metric).to_numpy(dtype=float)
        assert [t.get_text() for t in ax.texts] == ['n/a' if np.isnan(v) else f'{v:.2f}' for v in grid.flat]


def _one_class(domains, tmp_path):
    "A copy of the coffee domain with its AI images taken out of the manifest."
    only_real = tmp_path / 'only-real'
    shutil.copytree(domains[0]['coffee'], only_real)
    m = read_manifest(only_real)
    write_manifest(m[m.label == 'real'], only_real)
    return only_real


@pytest.mark.parametrize('case,message', [
    ('one', 'at least two datasets'), ('missing', 'is not an aidetect dataset'), ('duplicate', 'same dataset'),
    ('one-class', 'has no ai images'), ('replay', 'replay must be in [0, 1]'), ('replay-alone', '--replay needs --incremental')])
def test_bad_sequences_are_one_line(domains, tmp_path, capsys, case, message):
    a, b = domains[0]['astronaut'], domains[0]['chelsea']
    datasets = dict(one=[a], missing=[a, tmp_path / 'nowhere'], duplicate=[a, b, a], replay=[a, b],
                    **{'replay-alone': [a]}).get(case) or [a, _one_class(domains, tmp_path)]
    args = ['train', '--incremental', *map(str, datasets), '--out', str(tmp_path / 'seq'), '--no-pretrained']
    if case == 'replay': args += ['--replay', '1.5']
    if case == 'replay-alone': args = ['train', str(a), '--out', str(tmp_path / 'm'), '--replay', '0.5']
    rc = run_cli_here('aidetect', COMMANDS, args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert not (tmp_path / 'seq' / 'sequence.json').exists()


def test_cli_sequence_resumes_from_python(domains, tmp_path, capsys, monkeypatch):
    "`aidetect train --incremental` and `train_incremental` with the same settings are the same sequence."
    a, b, out = domains[0]['astronaut'], domains[0]['chelsea'], tmp_path / 'seq'
    args = ['train', '--incremental', str(a), str(b), '--out', str(out), '--arch', 'simple_cnn', '--no-pretrained',
            '--size', '32', '--bs', '8', '--steps', '4', '--eval-every', '2', '--lr', '1e-3', '--aug', 'none',
            '--valid-pct', '0.25', '--seed', '0']
    assert run_cli_here('aidetect', COMMANDS, args) == 0, capsys.readouterr().err
    assert 'sequence of 2 steps' in capsys.readouterr().out
    monkeypatch.setattr(sequence, 'train_detector', lambda *a, **k: pytest.fail('a finished step was trained again'))
    seq = sequence.train_incremental([a, b], out, valid_pct=0.25, seed=0, **KW)
    assert [s['step'] for s in seq['steps']] == [1, 2]
