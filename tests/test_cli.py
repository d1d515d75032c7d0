"""Every command explains itself."""
import pytest
from conftest import run_cli


@pytest.mark.parametrize('cmd', [('aidetect',), ('aidetect', 'train'), ('aidetect', 'eval'), ('aidetect', 'predict'),
                                 ('aidetect', 'demo'), ('aidetect-gen',), ('aidetect-gen', 'variations')])
def test_help(cmd):
    p = run_cli(*cmd, '--help', check=0)
    assert 'usage:' in p.stdout and len(p.stdout.splitlines()) > 5


@pytest.mark.parametrize('mod', ['aidetect.cli', 'aidetect.gen.cli'])
def test_top_level_help_does_not_import_torch(mod):
    "`aidetect --help` and `aidetect-gen --help` list the commands without importing any of them (or torch)."
    import subprocess, sys
    code = (f'import sys\nfrom {mod} import main\ntry: main(["--help"])\nexcept SystemExit: pass\n'
            'print(sorted(m for m in ("torch", "diffusers", "fastai") if m in sys.modules))')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == '[]', p.stdout + p.stderr


def test_no_command_prints_help():
    p = run_cli('aidetect')
    assert p.returncode == 2 and 'COMMAND' in p.stdout


def test_user_errors_have_no_traceback(tmp_path):
    for args in [('aidetect', 'train', tmp_path, '--out', tmp_path / 'm', '--no-pretrained'),
                 ('aidetect', 'eval', tmp_path / 'm', tmp_path),
                 ('aidetect', 'predict', tmp_path / 'm', tmp_path / 'x.jpg')]:
        p = run_cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith('aidetect: error:') and 'Traceback' not in p.stderr, p.stderr


def test_a_manifest_path_names_its_dataset(demo_data, tmp_path):
    "`aidetect eval MODEL data/x/manifest.csv` used to die with NotADirectoryError."
    from aidetect.demo import example_detector
    p = run_cli('aidetect', 'eval', example_detector(), demo_data['textures'] / 'manifest.csv', '--report', tmp_path / 'r')
    assert p.returncode == 0 and 'textures' in p.stdout, p.stderr
    p = run_cli('aidetect', 'audit', demo_data['textures'] / 'manifest.csv', '--bootstrap', '0')
    assert p.returncode == 0 and 'textures' in p.stdout, p.stderr


@pytest.mark.parametrize('flag,value,message', [('--freeze-epochs', '-1', 'freeze_epochs must be at least 0'),
                                                ('--epochs', '0', 'epochs must be at least 1'),
                                                ('--valid-pct', '1', 'valid_pct must be in [0, 1)')])
def test_bad_training_numbers_are_one_line(demo_data, tmp_path, flag, value, message):
    p = run_cli('aidetect', 'train', demo_data['textures'], '--out', tmp_path / 'm', '--no-pretrained', flag, value)
    assert p.returncode == 2 and message in p.stderr and 'Traceback' not in p.stderr, p.stderr
