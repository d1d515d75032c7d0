"""Every command explains itself."""
import pytest
from conftest import run_cli


@pytest.mark.parametrize('cmd', [('aidetect',), ('aidetect', 'train'), ('aidetect', 'eval'), ('aidetect', 'predict'),
                                 ('aidetect', 'demo'), ('aidetect-gen',), ('aidetect-gen', 'variations')])
def test_help(cmd):
    p = run_cli(*cmd, '--help', check=0)
    assert 'usage:' in p.stdout and len(p.stdout.splitlines()) > 5


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
