"""Training: any architecture, leak-free splits, balanced sampling, safe export that reloads to the same predictions."""
import json
import numpy as np, pandas as pd
import pytest, torch, torchvision
from conftest import run_cli
from aidetect.dataset import load_datasets
from aidetect.train import train_detector, export_detector
from aidetect.data import detector_dls
from aidetect.detector import load_detector, predict_files

FAST = dict(size=32, bs=16, epochs=1, freeze_epochs=0, pretrained=False, lr=1e-3, verbose=False, seed=0)


def _same_predictions(learn, tmp_path):
    "The safe pair, reloaded without pickle, predicts what the Learner predicts on its validation set."
    files = export_detector(learn, tmp_path / 'm')
    det = load_detector(files['json'])
    probs, _ = learn.get_preds(dl=learn.dls.valid)
    items = learn.dls.valid.items['file'].tolist()
    got = dict((i, p) for i, p, _ in predict_files(det, items))
    np.testing.assert_allclose([got[i] for i in range(len(items))], probs[:, 1].numpy(), atol=1e-4)
    return json.loads(files['json'].read_text())


def test_train_detector_splits_by_group_and_reloads_to_the_same_predictions(demo_data, tmp_path):
    learn = train_detector(demo_data['scenes-train'], **FAST)
    tr = set(learn.dls.train.items['group']); va = set(learn.dls.valid.items['group'])
    assert tr and va and tr.isdisjoint(va)
    info = _same_predictions(learn, tmp_path)
    assert set(info['train_groups']).isdisjoint(info['valid_groups'])
    assert len(info['train_groups']) == len(tr) and len(info['valid_groups']) == len(va)


@pytest.mark.parametrize('arch,aug', [('simple_cnn', 'epstein'), ('efficientnet_b0', 'cnndetection')])
def test_other_architectures_train_and_reload(demo_data, tmp_path, arch, aug):
    learn = train_detector(demo_data['scenes-train'], arch=arch, aug=aug, **FAST)
    assert len(learn.recorder.values) == 1
    info = _same_predictions(learn, tmp_path)
    assert (info['arch'], info['aug']) == (arch, aug)


def test_balance_draws_each_class_and_domain_equally(demo_data):
    df = load_datasets([demo_data['scenes-train'], demo_data['textures']])
    # unbalanced on purpose: all real images, a third of the AI ones
    ai = df[df.label == 'ai']
    df = pd.concat([df[df.label == 'real'], ai.iloc[::3]], ignore_index=True)
    dls = detector_dls(df, size=32, bs=8, balance=True, verbose=False)
    items = dls.train.items.reset_index(drop=True)
    assert (items.label == 'real').mean() > 0.6                      # the data is unbalanced...
    drawn = items.iloc[np.concatenate([dls.train.get_idxs() for _ in range(200)])]
    share = drawn.groupby(['label', 'domain']).size() / len(drawn)
    np.testing.assert_allclose(share.to_numpy(), 0.25, atol=0.02)   # ...the sampler's draws are not
    plain = detector_dls(df, size=32, bs=8, balance=False, verbose=False)
    assert type(plain.train).__name__ == 'TfmdDL' and type(dls.train).__name__ == 'WeightedDL'


def test_cli_trains_simple_cnn_with_balance_and_prints_a_summary(demo_data, tmp_path):
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], demo_data['textures'], '--out', tmp_path / 'cnn',
                '--arch', 'simple_cnn', '--no-pretrained', '--size', '32', '--bs', '16', '--epochs', '1', '--lr', '1e-3',
                '--balance', '--aug', 'epstein', check=0)
    assert 'kept epoch 0 (the last of 1)' in p.stdout and 'images/s' in p.stdout and 'scenes-train' in p.stdout   # counts are printed
    info = json.loads((tmp_path / 'cnn.json').read_text())
    assert info['balance'] and [d['name'] for d in info['datasets']] == ['scenes-train', 'textures']


def test_cli_weights_file(demo_data, tmp_path):
    w = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), w)
    run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'r18', '--arch', 'resnet18',
            '--weights', w, '--size', '32', '--bs', '16', '--epochs', '1', '--lr', '1e-3', check=0)
    info = json.loads((tmp_path / 'r18.json').read_text())
    assert info['pretrained'] and info['weights_file'] == str(w)
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'x', '--arch', 'resnet34',
                '--weights', w, '--size', '32')
    assert p.returncode == 2 and 'not a state dict of resnet34' in p.stderr


def test_unknown_arch_and_missing_timm_weights_are_clear(demo_data, tmp_path):
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'm', '--arch', 'resnet35')
    assert p.returncode == 2 and 'unknown architecture' in p.stderr and 'list_models' in p.stderr
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'm', '--arch', 'efficientnet_b0',
                '--size', '32', env={'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf')})
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
    for hint in ('timm/efficientnet_b0', '--weights', '--no-pretrained', 'hf download'): assert hint in p.stderr


def test_epochs_n_trains_n_epochs_and_the_summary_is_the_saved_model(demo_data, tmp_path):
    "--epochs 2 from scratch: two epoch rows, and the summary's kept epoch and numbers are the model JSON's."
    import re
    p = run_cli('aidetect', 'train', demo_data['scenes-train'], '--out', tmp_path / 'm', '--arch', 'simple_cnn',
                '--no-pretrained', '--size', '32', '--bs', '16', '--epochs', '2', '--lr', '1e-3', check=0)
    rows = [l for l in p.stdout.splitlines() if re.match(r'^\d+\s+\d', l)]
    assert len(rows) == 2, p.stdout
    info = json.loads((tmp_path / 'm.json').read_text())
    assert len(info['history']) == 2 and info['schedule']['epochs_run'] == 2 and info['schedule']['kept_epoch'] == 1
    kept = info['history'][1]
    assert info['metrics']['valid_loss'] == kept['valid_loss']
    assert f"kept epoch 1 (the last of 2): valid_loss {kept['valid_loss']:.3f}" in p.stdout, p.stdout
    assert f"{kept['valid_loss']:.6f}" in rows[1]   # the printed row is the kept one
