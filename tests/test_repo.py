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


# Modules in the order they build on each other: a module imports only modules before it (no cycles, nothing upward).
LAYERS = ['core', 'plots', 'process', 'script', 'decode', 'images', 'hf', 'dataset', 'verify', 'pixels', 'audit',
          'gen.pipeline', 'gen.backends', 'gen.sizing', 'gen.plan', 'gen.run', 'gen.importer', 'gen.fetch',
          'gen.zoo.parts', 'gen.zoo.registry', 'gen.zoo.presets', 'gen.zoo.unclip', 'gen.zoo.kandinsky', 'gen.zoo.ipadapter',
          'gen.zoo.img2img', 'gen.zoo.recon', 'gen.zoo.flux', 'gen.zoo.identity', 'gen.zoo.load', 'gen.cli',
          'model', 'metrics', 'detector', 'augment', 'tracking', 'data', 'checkpoint', 'train', 'evaluate', 'robustness', 'sequence', 'explain', 'app', 'prepare',
          'hub', 'demo', 'cli', '__main__', 'all']


def _layer(dotted: list) -> str:
    "The LAYERS name of the module `dotted` (parts after 'aidetect') or of the longest package prefix that is one ('' if none)."
    for n in range(len(dotted), 0, -1):
        if '.'.join(dotted[:n]) in LAYERS: return '.'.join(dotted[:n])
    return '.'.join(dotted[:1]) if dotted[:1] and dotted[0] != 'gen' else ''


def _imports(path: Path, pkg: str) -> set:
    "aidetect modules that the module at `path` (named `pkg`) imports, lazily inside functions included; subpackages at any depth."
    import ast
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against the module's package
                base = pkg.split('.')[:-node.level] + (node.module.split('.') if node.module else [])
            else: base = node.module.split('.') if node.module else []
            if base[:1] != ['aidetect']: continue
            named = {_layer(base[1:] + [a.name]) for a in node.names}   # `from aidetect.gen.zoo import unclip` names a module
            out |= {n for n in named if n.count('.') >= len(base) - 1} or {_layer(base[1:])}
        elif isinstance(node, ast.Import):
            out |= {_layer(a.name.split('.')[1:]) for a in node.names if a.name.startswith('aidetect.')}
    return out - {''}


def test_imports_sees_subpackages():
    assert _imports.__doc__ and _layer(['gen', 'zoo', 'unclip', 'UnCLIPBackend']) == 'gen.zoo.unclip'
    assert _layer(['gen', 'zoo', 'load']) == 'gen.zoo.load' and _layer(['train', 'x']) == 'train'


def test_imports_only_run_downward():
    lib = ROOT / 'aidetect'
    mods = {p.relative_to(lib).with_suffix('').as_posix().replace('/', '.'): p for p in lib.rglob('*.py')
            if p.name not in ('__init__.py', '_modidx.py')}
    assert set(mods) == set(LAYERS), f'update LAYERS: {set(mods) ^ set(LAYERS)}'
    upward = {m: sorted(d for d in _imports(p, f'aidetect.{m}') if d != m and LAYERS.index(d) > LAYERS.index(m))
              for m, p in mods.items()}
    assert not any(upward.values()), {m: u for m, u in upward.items() if u}
    entry = _imports(ROOT / 'data_gen' / '__main__.py', 'data_gen.__main__') | _imports(ROOT / 'data_gen' / '__init__.py', 'data_gen')
    assert entry == {'gen.cli'}, entry


def _closure(mod: str, mods: dict) -> set:
    "Every aidetect module `mod` imports, directly or through others (lazy imports inside functions included)."
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        for d in _imports(mods[m], f'aidetect.{m}'):
            if d != m and d not in seen and d in mods: seen.add(d); todo.append(d)
    return seen


def test_the_detector_stands_without_training():
    "Using a model (loading, predicting, evaluating, explaining, the app) never imports training or its augmentations."
    lib = ROOT / 'aidetect'
    mods = {p.relative_to(lib).with_suffix('').as_posix().replace('/', '.'): p for p in lib.rglob('*.py')
            if p.name not in ('__init__.py', '_modidx.py')}
    for m in ('model', 'metrics', 'detector', 'evaluate', 'robustness', 'explain', 'app'):
        assert not {'train', 'augment'} & _closure(m, mods), (m, sorted(_closure(m, mods)))
    assert 'train' in _closure('sequence', mods)   # the check can fail: a module that does train is caught


def _cells(nb: Path) -> list:
    import json
    return json.loads(nb.read_text())['cells']


def test_saved_outputs_show_no_tracebacks_or_failed_downloads():
    "The notebooks are the rendered docs: no traceback, no failed download, no progress bar in a kept output."
    import json
    bad = []
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for c in _cells(nb):
            for o in c.get('outputs', []):
                text = json.dumps(o.get('text', '')) + json.dumps(o.get('data', {}).get('text/plain', '')) + json.dumps(o.get('traceback', ''))
                if o.get('output_type') == 'error' or any(s in text for s in ('Traceback', 'Name or service not known',
                                                                                'Downloading:', 'urlopen error [Errno')):
                    bad.append(f"{nb.name} cell {c.get('id')}")
    assert not bad, bad


def test_every_export_cell_of_the_zoo_and_train_notebooks_is_followed_by_an_example_or_a_check():
    "fastcore's rhythm: after each exported definition, before the next, a cell that uses it."
    notebooks = [p for p in (ROOT / 'nbs').glob('*.ipynb') if p.name.startswith(('18_gen_zoo', '20_train'))]
    assert notebooks
    missing = []
    for nb in notebooks:
        code = [c for c in _cells(nb) if c['cell_type'] == 'code']
        is_export = lambda c: ''.join(c['source']).lstrip().startswith(('#| export', '#|export'))
        for a, b in zip(code, code[1:] + [None]):
            if is_export(a) and (b is None or is_export(b)) and 'import' not in ''.join(a['source']).split('\n')[1]:
                missing.append(f"{nb.name}: {''.join(a['source']).splitlines()[1][:60]}")
    assert not missing, missing


def test_browser_tests_fail_under_ci_without_chromium(monkeypatch):
    "CI must not go green by skipping the only UI tests: without Chromium they fail there, and skip elsewhere."
    import pytest
    from conftest import need_chromium
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='apt-get install chromium'): need_chromium(None)
    monkeypatch.delenv('CI')
    with pytest.raises(pytest.skip.Exception): need_chromium(None)
    assert need_chromium('/usr/bin/chromium') == '/usr/bin/chromium'


def test_the_house_stays_small():
    "No function over 80 lines, no library function (outside the CLI layer) over 16 parameters, no module over 600 lines."
    import ast
    big = []
    for p in sorted((ROOT / 'aidetect').rglob('*.py')):
        if p.name == '_modidx.py': continue
        src = p.read_text()
        if len(src.splitlines()) > 600: big.append(f'{p.name}: {len(src.splitlines())} lines')
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg in ('self', 'cls') else 0)
            if node.end_lineno - node.lineno + 1 > 80: big.append(f'{p.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines')
            if n > 16 and not node.name.startswith('cli_'): big.append(f'{p.name}:{node.name}: {n} parameters')
    assert not big, big


def test_no_one_sided_check_of_a_shortcut():
    "An 'at chance' check must be two-sided (|AUC − 0.5| ≤ tol): `auc <= 0.6` passes an inverted AUC of 0.1, a perfect leak read backwards."
    import re
    one_sided = re.compile(r"auc\w*['\"\]\)]*(\.\w+\(\))?\s*(<=|<)\s*0?\.[5-7]\d*(?!\d)")
    code = [(p.name, l) for p in sorted((ROOT / 'tests').glob('*.py')) if p.name != 'test_repo.py' for l in p.read_text().splitlines()]
    code += [(nb.name, l) for nb in sorted((ROOT / 'nbs').glob('*.ipynb')) for c in _cells(nb) if c['cell_type'] == 'code'
             for l in ''.join(c['source']).splitlines()]
    found = [f'{name}: {l.strip()}' for name, l in code
             if ('assert' in l or 'test_eq(' in l) and one_sided.search(l.lower()) and 'abs(' not in l
             and 'one-sided check would' not in l]   # nb04 shows, on purpose, what a one-sided check lets through
    assert not found, found
    assert one_sided.search('assert (aud.table.auc <= 0.6).all()') and one_sided.search("assert res.auc < 0.55")   # the pattern bites
