"""Training and evaluation meet a write that fails at the OS layer (a file-size limit: EFBIG, as a full disk gives
ENOSPC): one line, exit 2, nothing half-written, and the same command afterwards finishes with what a run that never
failed writes."""
import json, subprocess
from pathlib import Path
import pandas as pd, pytest, torch
from safetensors.torch import load_file
from conftest import BIN, file_size_limit

from aidetect.demo import example_datasets

TINY = ['--arch', 'simple_cnn', '--no-pretrained', '--size', '32', '--bs', '8', '--aug', 'none', '--epochs', '2', '--lr', '1e-3']


def _aidetect(*args, preexec=None):
    return subprocess.run([str(BIN/'aidetect'), *map(str, args)], capture_output=True, text=True, timeout=600, preexec_fn=preexec)


def _one_error_line(p, *want):
    errs = [l for l in p.stderr.splitlines() if 'error' in l.lower()]
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
    assert len(errs) == 1 and errs[0].startswith('aidetect: error: could not write') and all(w in errs[0] for w in want), p.stderr


@pytest.fixture(scope='module')
def data(): return example_datasets()


def test_training_that_cannot_write_is_one_line_and_the_rerun_writes_the_same_model(data, tmp_path):
    whole, hit = tmp_path/'whole', tmp_path/'hit'
    assert _aidetect('train', data['scenes-train'], '--out', whole, *TINY).returncode == 0
    p = _aidetect('train', data['scenes-train'], '--out', hit, *TINY, preexec=file_size_limit(20_000))
    _one_error_line(p, str(hit), 'file-size limit', 'free')
    assert not list(tmp_path.glob('hit.*')) or not Path(f'{hit}.safetensors').exists()   # no model, nor half a one
    assert not list(tmp_path.rglob('*.tmp'))
    again = _aidetect('train', data['scenes-train'], '--out', hit, *TINY, *(['--resume'] if Path(f'{hit}.ckpt').exists() else []))
    assert again.returncode == 0, again.stderr
    a, b = load_file(f'{whole}.safetensors'), load_file(f'{hit}.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda m: {k: v for k, v in json.loads(Path(f'{m}.json').read_text()).items() if k not in ('train_seconds', 'created')}
    assert strip(whole) == strip(hit)


def test_an_eval_report_that_cannot_be_written_is_one_line_and_the_rerun_completes(data, tmp_path):
    from aidetect.train import train_detector, export_detector
    learn = train_detector(data['scenes-train'], arch='simple_cnn', pretrained=False, size=32, bs=8, epochs=1, lr=1e-3,
                           aug='none', verbose=False)
    model = export_detector(learn, tmp_path/'m')['json']
    rep, clean = tmp_path/'rep', tmp_path/'clean'
    assert _aidetect('eval', model, data['scenes-test'], '--report', clean).returncode == 0
    p = _aidetect('eval', model, data['scenes-test'], '--report', rep, preexec=file_size_limit(3_000))
    _one_error_line(p, str(rep), 'file-size limit')
    assert not list(tmp_path.rglob('*.tmp'))
    assert _aidetect('eval', model, data['scenes-test'], '--report', rep).returncode == 0
    assert sorted(f.name for f in rep.iterdir()) == sorted(f.name for f in clean.iterdir())
    pd.testing.assert_frame_equal(pd.read_csv(rep/'predictions.csv'), pd.read_csv(clean/'predictions.csv'))
    pd.testing.assert_frame_equal(pd.read_csv(rep/'metrics.csv'), pd.read_csv(clean/'metrics.csv'))
