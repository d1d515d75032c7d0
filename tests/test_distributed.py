"""Training, evaluation and prediction under `accelerate launch` with two CPU processes (gloo), as on many GPUs."""
import json
import pandas as pd
import pytest
from conftest import BIN, run_cli

# Without a GPU, `accelerate launch --cpu` starts one process; --multi_gpu with two processes starts two, which talk
# over gloo (see tests/test_generator.py for the same setting).
LAUNCH = [str(BIN / 'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'aidetect']


def launch(*args, timeout=900):
    import os, subprocess
    p = subprocess.run(LAUNCH + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope='module')
def ddp_model(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp') / 'scenes'
    p = launch('train', demo_data['scenes-train'], '--out', out, '--no-pretrained', '--size', '32', '--bs', '16',
               '--epochs', '1', '--aug', 'none')   # no --lr: the first process runs lr_find and tells the other
    return out, p


@pytest.mark.slow
def test_two_processes_train_one_model(ddp_model, demo_data):
    out, p = ddp_model
    assert p.stdout.count('wrote ') == 1                     # the first process alone writes the files
    info = json.loads(out.with_suffix('.json').read_text())
    assert info['processes'] == 2 and info['metrics']['valid_loss'] is not None
    from aidetect.dataset import group_keys, read_manifest
    assert sorted(info['train_groups'] + info['valid_groups']) == sorted(set(group_keys(read_manifest(demo_data['scenes-train']))))
    assert 'lr_find suggests' in p.stdout and info['lr'] > 0
    from aidetect.detector import load_detector, predict_files
    det = load_detector(out)                                 # the exported pair loads and predicts
    files = sorted(str(f) for f in (demo_data['scenes-test'] / 'real').rglob('*.*'))
    assert all(0 <= p <= 1 for _, p, _ in predict_files(det, files))


@pytest.mark.slow
def test_two_processes_predict_every_file_once(ddp_model, demo_data, tmp_path):
    out, _ = ddp_model
    launch('predict', out, demo_data['scenes-test'] / 'real', demo_data['textures'] / 'ai', '--out', tmp_path / 'p.csv')
    run_cli('aidetect', 'predict', out, demo_data['scenes-test'] / 'real', demo_data['textures'] / 'ai',
            '--out', tmp_path / 'one.csv', check=0)
    two, one = pd.read_csv(tmp_path / 'p.csv'), pd.read_csv(tmp_path / 'one.csv')
    assert len(two) == len(one) > 8 and two['path'].is_unique
    pd.testing.assert_frame_equal(two, one)                  # the merged result is the one-process result


@pytest.mark.slow
def test_two_processes_evaluate_every_image_once(ddp_model, demo_data, tmp_path):
    out, _ = ddp_model
    p = launch('eval', out, demo_data['scenes-test'], demo_data['textures'], '--report', tmp_path / 'rep')
    assert sum(l.split()[:1] == ['scenes-test'] for l in p.stdout.splitlines()) == 1   # one table, printed once
    preds = pd.read_csv(tmp_path / 'rep' / 'predictions.csv')
    from aidetect.dataset import read_manifest
    n = len(read_manifest(demo_data['scenes-test'])) + len(read_manifest(demo_data['textures']))
    assert len(preds) == n and not preds.duplicated(['dataset', 'path']).any()
    run_cli('aidetect', 'eval', out, demo_data['scenes-test'], demo_data['textures'], '--report', tmp_path / 'one', check=0)
    one = pd.read_csv(tmp_path / 'one' / 'predictions.csv')
    pd.testing.assert_frame_equal(preds, one)


@pytest.mark.slow
def test_two_processes_resume_together(demo_data, tmp_path):
    "Stopped after an epoch (SIGTERM to the launcher, which passes it on), both processes resume from the one checkpoint: the weights of an unbroken run."
    import os, signal, subprocess, time, torch
    from safetensors.torch import load_file
    args = [demo_data['scenes-train'], '--no-pretrained', '--arch', 'simple_cnn', '--size', '32', '--bs', '8', '--epochs', '5',
            '--lr', '1e-3', '--aug', 'none']
    launch('train', *args, '--out', tmp_path / 'whole')
    cut = tmp_path / 'cut'
    p = subprocess.Popen(LAUNCH + ['train', *map(str, args), '--out', str(cut)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, start_new_session=True)
    t0 = time.time()
    while not (tmp_path / 'cut.ckpt' / 'state.pt').exists() and p.poll() is None and time.time() - t0 < 600: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGTERM)   # as a scheduler does: every process of the job
    p.communicate(timeout=300)
    if p.returncode == 0: pytest.skip('the run finished before SIGTERM arrived')
    assert not cut.with_suffix('.safetensors').exists()
    launch('train', *args, '--out', cut, '--resume')
    a, b = load_file(f'{tmp_path / "whole"}.safetensors'), load_file(f'{cut}.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)
