"""Sharing, offline: a dataset aidetect writes loads in 🤗 datasets with its card; train writes a model card and TensorBoard
events; eval --report writes a results card; Hub ids and pushes fail in one line offline, and a cached Hub model loads."""
import hashlib, io, json, math, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import BIN, noise_image, run_cli

OFFLINE = dict(HF_HUB_OFFLINE='1')


def _png(im) -> bytes:
    b = io.BytesIO(); im.save(b, format='PNG'); return b.getvalue()


def tiny_dataset(root: Path, groups: int = 8, size: int = 32) -> Path:
    "A dataset written by aidetect's writer: per group a real PNG and its 'fakegen' variant; every third group is 'test'."
    from aidetect.dataset import DatasetWriter, merge_parts, real_path, variant_path
    with DatasetWriter(root) as w:
        for g in range(groups):
            rel, split = f'cat/p{g}.png', 'test' if g % 3 == 2 else 'train'
            common = dict(group=f'p{g}', domain='weather', category='cat', split=split)
            w.write_file(real_path(rel), _png(noise_image(size, size, seed=g)), dict(label='real', **common))
            # the AI image is smoother: a detector can learn it (the tests check files, not skill)
            ai = noise_image(size // 4, size // 4, seed=100 + g).resize((size, size))
            w.write_file(variant_path(rel, 'fakegen', 0, '.png'), _png(ai),
                         dict(label='ai', generator='fakegen', model='someone/fake-model', revision='v1', seed=g, **common))
    merge_parts(root)
    return root


@pytest.fixture
def env(tmp_path):
    "The subprocess environment of these tests: offline, a private Hugging Face home."
    return dict(OFFLINE, HF_HOME=str(tmp_path / 'hf-home'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A dataset and a simple_cnn trained on it by `aidetect train ... --log tensorboard,csv` (offline)."
    d = tmp_path_factory.mktemp('hub')
    ds = tiny_dataset(d / 'tiny')
    p = run_cli('aidetect', 'train', ds, '--out', d / 'models' / 'tiny', '--arch', 'simple_cnn', '--no-pretrained',
                '--size', '32', '--epochs', '2', '--bs', '4', '--lr', '1e-3', '--workers', '0',
                '--log', 'tensorboard,csv', '--log-dir', d / 'runs', env=dict(OFFLINE, HF_HOME=str(d / 'hf-home')), check=0)
    return dict(ds=ds, model=d / 'models' / 'tiny', runs=d / 'runs', out=p.stdout + p.stderr)


def test_dataset_loads_in_datasets_with_labels_and_manifest_columns(tmp_path):
    import datasets
    from aidetect.dataset import read_manifest
    ds = tiny_dataset(tmp_path / 'tiny')
    (ds / 'stray.png').write_bytes((ds / 'real/cat/p0.png').read_bytes())   # not in the manifest: must not load
    m = read_manifest(ds)
    d = datasets.load_dataset('imagefolder', data_dir=str(ds), cache_dir=str(tmp_path / 'cache'))['train']
    assert sorted(d['path']) == sorted(m['path']) and len(d) == len(m) == 16   # every manifest image, once
    assert isinstance(d.features['label'], datasets.ClassLabel) and d.features['label'].names == ['real', 'ai']
    got = pd.DataFrame(dict(path=d['path'], label=[d.features['label'].int2str(i) for i in d['label']],
                            group=d['group'], generator=d['generator'], split=d['split']))
    want = m[['path', 'label', 'group', 'generator', 'split']]
    pd.testing.assert_frame_equal(got.sort_values('path').reset_index(drop=True), want.sort_values('path').reset_index(drop=True))
    assert d[0]['image'].size == (32, 32)
    same = datasets.load_dataset(str(ds), cache_dir=str(tmp_path / 'cache2'))['train']   # the folder alone, through its card
    assert sorted(same['path']) == sorted(m['path']) and same.features['label'] == d.features['label']
    assert d.features['seed'].dtype == 'int64' and sorted(s for s in d['seed'] if s is not None) == list(range(8))


def test_dataset_card_parses_names_licence_and_manifest_sha256_and_follows_the_manifest(tmp_path):
    from huggingface_hub import DatasetCard
    from aidetect.dataset import DatasetWriter, merge_parts, real_path
    ds = tiny_dataset(tmp_path / 'tiny')
    sha = lambda: hashlib.sha256((ds / 'manifest.csv').read_bytes()).hexdigest()   # independent of aidetect's hashing
    card = DatasetCard.load(ds / 'README.md')
    assert card.data.license == 'unknown'   # the writer is not told the sources' licence
    assert card.data.aidetect['manifest_sha256'] == sha() and card.data.task_categories == ['image-classification']
    assert sha() in card.text and 'someone/fake-model' in card.text and 'fakegen' in card.text
    first = sha()
    with DatasetWriter(ds) as w:   # a resumed run adds an image: the card and metadata follow the manifest
        w.write_file(real_path('cat/extra.png'), _png(noise_image(32, 32, seed=99)), dict(label='real', group='extra', domain='weather'))
    merge_parts(ds)
    card = DatasetCard.load(ds / 'README.md')
    assert card.data.aidetect['manifest_sha256'] == sha() != first and card.data.aidetect['images'] == 17
    # `aidetect-gen card`: the fetch registry's licence for domain 'weather' (CC0), or the one given
    from aidetect.hub import cli_card
    cli_card(str(ds))
    assert DatasetCard.load(ds / 'README.md').data.license == 'cc0-1.0'
    cli_card(str(ds), licence='MIT')
    card = DatasetCard.load(ds / 'README.md')
    assert card.data.license == 'mit' and card.data.aidetect['licences'] == {'weather': 'MIT'}


def test_to_hf_dataset_splits_as_the_manifest_says(tmp_path):
    from aidetect.hub import to_hf_dataset
    from aidetect.dataset import read_manifest
    ds = tiny_dataset(tmp_path / 'tiny')
    for f in ('README.md', 'metadata.parquet'): (ds / f).unlink()   # a dataset written before aidetect.hf
    d = to_hf_dataset(ds)
    counts = read_manifest(ds)['split'].value_counts().to_dict()
    assert {k: len(v) for k, v in d.items()} == counts == {'train': 12, 'test': 4}
    assert set(d['test']['group']) == {'p2', 'p5'}


def test_train_writes_a_model_card_with_its_validation_results(trained):
    from huggingface_hub import ModelCard
    info = json.loads(trained['model'].with_suffix('.json').read_text())
    card = ModelCard.load(trained['model'].parent / 'README.md')
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    want = {'accuracy': info['metrics']['accuracy'], 'roc_auc': info['metrics']['roc_auc_score'], 'f1': info['metrics']['f1_score']}
    assert {k: got[k] for k in want} == {k: round(v, 6) for k, v in want.items()}
    assert {r.dataset_split for r in card.data.eval_results} == {'validation'} and card.data.model_name == 'tiny'
    sha = hashlib.sha256((trained['ds'] / 'manifest.csv').read_bytes()).hexdigest()
    assert sha in card.text and 'simple_cnn' in card.text and 'demonstration model' in card.text
    assert 'README.md' in trained['out']   # the command says it wrote the card


def test_train_log_tensorboard_leaves_the_training_loss(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    info = json.loads(trained['model'].with_suffix('.json').read_text())
    events = sorted(trained['runs'].rglob('events.out.tfevents.*'))
    assert len(events) == 1, events   # one run, one writer (lr_find is not logged)
    acc = EventAccumulator(str(events[0].parent)); acc.Reload()
    loss = [e.value for e in acc.Scalars('train_loss')]
    assert len(loss) == 2 * (info['n_train'] // 4) and all(math.isfinite(v) for v in loss)   # one per batch, 2 epochs
    valid = [e.value for e in acc.Scalars('valid_loss')]
    assert valid == pytest.approx([h['valid_loss'] for h in info['history']], rel=1e-5)   # what fastai recorded
    assert 'settings' in acc.Tags()['tensors'] or any('settings' in t for t in acc.Tags().get('tensors', []))
    hist = pd.read_csv(next(trained['runs'].rglob('history.csv')))
    assert len(hist) == 2 and list(hist.columns[:3]) == ['epoch', 'train_loss', 'valid_loss']


def test_train_log_unknown_logger_is_one_line(trained, env):
    p = run_cli('aidetect', 'train', trained['ds'], '--out', trained['model'].parent / 'x', '--log', 'comet', env=env)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()] and "unknown logger 'comet'" in p.stderr


def test_eval_report_writes_a_results_card(trained, tmp_path, env):
    from huggingface_hub import ModelCard
    run_cli('aidetect', 'eval', trained['model'], trained['ds'], '--report', tmp_path / 'r', '--bootstrap', '0', env=env, check=0)
    card = ModelCard.load(tmp_path / 'r' / 'README.md')
    table = pd.read_csv(tmp_path / 'r' / 'metrics.csv')
    row = table[table['dataset'] == 'tiny'].iloc[0]
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert got['accuracy'] == round(row['accuracy'], 6) and got['roc_auc'] == round(row['roc_auc'], 6)
    assert {r.dataset_split for r in card.data.eval_results} == {'test'}


def _one_line_error(p, *words):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and 'Traceback' not in p.stderr, p.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_push_offline_is_one_line(trained, env):
    _one_line_error(run_cli('aidetect', 'push', trained['model'], 'someone/tiny', env=env), 'offline', 'someone/tiny')
    from aidetect.gen.cli import COMMANDS
    if any(c.name == 'push' for c in COMMANDS): p = run_cli('aidetect-gen', 'push', trained['ds'], 'someone/tiny-data', env=env)
    else:   # until aidetect-gen's table has the row: the same function through the same command-line machinery
        code = ("import sys; from aidetect.script import Command, run_cli; sys.exit(run_cli('aidetect-gen', "
                "[Command('push', 'aidetect.hub:cli_push_dataset')], sys.argv[1:]))")
        p = subprocess.run([sys.executable, '-c', code, 'push', str(trained['ds']), 'someone/tiny-data'], capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=300)
    _one_line_error(p, 'offline', 'someone/tiny-data')


def test_a_hub_id_offline_is_one_line_and_a_cached_one_loads(trained, tmp_path, env):
    img = trained['ds'] / 'real' / 'cat' / 'p0.png'
    _one_line_error(run_cli('aidetect', 'predict', 'hf://someone/tiny', img, env=env), 'someone/tiny', 'Hugging Face Hub', 'offline')
    _one_line_error(run_cli('aidetect', 'eval', 'someone/tiny', trained['ds'], env=env), 'someone/tiny', 'Hugging Face Hub')
    # positive control: the same id, with the pair in huggingface_hub's cache as a download leaves it, loads offline
    snap = Path(env['HF_HOME']) / 'hub' / 'models--someone--tiny' / 'snapshots' / ('0' * 40)
    snap.mkdir(parents=True)
    (snap.parents[1] / 'refs').mkdir(); (snap.parents[1] / 'refs' / 'main').write_text('0' * 40)
    for ext in ('json', 'safetensors'): (snap / f'model.{ext}').write_bytes(trained['model'].with_suffix(f'.{ext}').read_bytes())
    hub = run_cli('aidetect', 'predict', 'hf://someone/tiny', img, env=env, check=0)
    local = run_cli('aidetect', 'predict', trained['model'], img, env=env, check=0)
    assert hub.stdout == local.stdout and 'prob_ai' in hub.stdout
