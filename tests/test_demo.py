"""The demo runs end to end and says plainly that its generator has random weights."""
from conftest import run_cli


def test_small_demo_end_to_end(tmp_path):
    p = run_cli('aidetect', 'demo', '--out', tmp_path / 'demo', '--per-photo', '4', '--steps', '2', '--epochs', '1', '--size', '32',
                check=0)
    assert 'RANDOM WEIGHTS' in p.stdout and 'machinery' in p.stdout and 'aidetect-gen variations' in p.stdout
    out = p.stdout + p.stderr   # a pipe, as in CI or `| tee`: plain lines, no redrawn bars, no library bars
    assert '\r' not in out and '█' not in out and 'Loading pipeline components' not in out and 'Loading weights' not in out
    assert 'epoch' in out and 'scenes-train:' in out   # fastai's epoch table and one line per dataset instead
    for f in ('report/metrics.csv', 'report/predictions.csv', 'report/confusion_textures.png',
              'report/confusion_scenes-test.png', 'models/demo.safetensors', 'models/demo.json',
              'data/scenes-train/manifest.csv', 'data/textures/manifest.csv'):
        assert (tmp_path / 'demo' / f).exists(), f
