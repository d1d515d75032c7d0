"""The repository keeps itself honest: exported library, clean notebooks and README all match nbs/."""
import filecmp, shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT, BIN


def _copy(tmp_path):
    "Copy just what nbdev reads and writes: a whole checkout can hold virtual environments of many GB."
    dst = tmp_path / 'repo'
    dst.mkdir()
    shutil.copy2(ROOT / 'pyproject.toml', dst)
    for d in ('nbs', 'aidetect'):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_proc'))
    return dst


def _diff(a: Path, b: Path, pattern='*'):
    fa = {p.relative_to(a): p.read_bytes() for p in a.rglob(pattern) if p.is_file() and '__pycache__' not in p.parts}
    fb = {p.relative_to(b): p.read_bytes() for p in b.rglob(pattern) if p.is_file() and '__pycache__' not in p.parts}
    return sorted(str(k) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def test_library_is_what_the_notebooks_export(tmp_path):
    dst = _copy(tmp_path)
    subprocess.run([str(BIN / 'nbdev-export')], cwd=dst, check=True, capture_output=True)
    changed = _diff(ROOT / 'aidetect', dst / 'aidetect', '*.py') + \
        (['nbs/llms.txt'] if (ROOT / 'nbs/llms.txt').read_bytes() != (dst / 'nbs/llms.txt').read_bytes() else [])
    assert not changed, f'aidetect/ is out of step with nbs/ (run nbdev-export and commit): {changed}'


def test_notebooks_are_clean(tmp_path):
    dst = _copy(tmp_path)
    subprocess.run([str(BIN / 'nbdev-clean')], cwd=dst, check=True, capture_output=True)
    changed = _diff(ROOT / 'nbs', dst / 'nbs', '*.ipynb')
    assert not changed, f'run nbdev-clean before committing: {changed}'


def test_readme_is_what_index_ipynb_makes():
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_readme.py'), '--check'], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / 'README.md').read_text(), (ROOT / '.ci' / 'run').read_text()
    assert 'nbdev-test && pytest' in readme and 'nbdev-test && pytest' in ci
    assert 'pip install -e ".[dev]" && aidetect demo' in readme and 'pip install -e ".[dev]" && aidetect demo' in ci
