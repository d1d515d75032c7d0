"""The evaluation widget in a real JupyterLab, driven by headless Chromium: it renders with nothing printed above
it, says AI is the positive class, shows n/a and no index column, and its counts follow the typed threshold, the
dragged slider and the dataset picker exactly as predictions.csv says."""
import json, os, secrets, shutil, socket, subprocess, time, urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BIN, CHROMIUM, CHROMIUM_ARGS, keep_screenshot, need_chromium

LAB = shutil.which('jupyter-lab', path=str(BIN)) or shutil.which('jupyter-lab')
COUNTS = """() => Object.fromEntries(Array.from(document.querySelectorAll('.aidetect-confusion td[data-cell]'))
                                     .map(td => [td.dataset.cell, +td.querySelector('.count').textContent]))"""
CAPTION = "document.querySelector('.aidetect-confusion caption').textContent"


def expected(preds: pd.DataFrame, dataset: str, th: float) -> dict:
    "The confusion counts of `dataset` at threshold `th`, straight from predictions.csv."
    d = preds if dataset == 'all' else preds[preds['dataset'] == dataset]
    ai, called = d['label'] == 'ai', d['prob_ai'] >= th
    return dict(tn=int((~ai & ~called).sum()), fp=int((~ai & called).sum()), fn=int((ai & ~called).sum()),
                tp=int((ai & called).sum()))


def _get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r: return r.status


@pytest.fixture(scope='module')
def lab(tmp_path_factory, demo_data, detector_of_size):
    "A JupyterLab server on localhost over a folder holding a notebook that evaluates a tiny model; yields (url, folder)."
    need_chromium()
    if not LAB: pytest.skip('no JupyterLab in this environment (it is in the dev extras: pip install -e ".[dev]")')
    import nbformat
    d = tmp_path_factory.mktemp('lab')
    sets = {'fetchNews': 'false', 'checkForUpdates': False}   # no network calls, no news toast over the page
    (d / 'settings' / '@jupyterlab' / 'apputils-extension').mkdir(parents=True)
    (d / 'settings' / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings').write_text(json.dumps(sets))
    datasets = {'scenes-test': str(demo_data['scenes-test']), 'textures': str(demo_data['textures'])}
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(f"from aidetect.evaluate import evaluate\n"
                                          f"res = evaluate({str(detector_of_size(32))!r}, {datasets!r}, progress=False)\n"
                                          f"_ = res.save({str(d / 'report')!r})"),
                nbformat.v4.new_code_cell('res.widget()')]
    nbformat.write(nb, d / 'widget.ipynb')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    token = secrets.token_hex(8)
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(d / 'runtime'), 'JUPYTER_CONFIG_DIR': str(d / 'config'),
           'IPYTHONDIR': str(d / 'ipython')}
    server = subprocess.Popen(
        [LAB, '--no-browser', '--allow-root', f'--port={port}', '--ip=127.0.0.1', f'--ServerApp.token={token}',
         f'--ServerApp.root_dir={d}', f'--LabApp.user_settings_dir={d / "settings"}', f'--LabApp.workspaces_dir={d / "ws"}',
         '--LabApp.expose_app_in_browser=True', '--LabApp.extension_manager=readonly',
         '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
        cwd=d, env=env, stdout=open(d / 'lab.log', 'w'), stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try:
                if _get(f'{url}/api/status?token={token}') == 200: break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f'JupyterLab did not start:\n{(d / "lab.log").read_text()[-3000:]}')
        yield f'{url}/lab/tree/widget.ipynb?token={token}&reset', d
    finally:   # the server shuts its kernels down itself
        try: urllib.request.urlopen(urllib.request.Request(f'{url}/api/shutdown?token={token}', method='POST'), timeout=10)
        except OSError: pass
        try: server.wait(30)
        except subprocess.TimeoutExpired: server.kill(); server.wait()


def _type_threshold(page, value: str):
    "Type `value` into the slider's readout, as a person does, and wait for the matrix to follow."
    page.locator('.widget-readout').click()
    page.keyboard.press('Control+A'); page.keyboard.type(value); page.keyboard.press('Enter')
    page.wait_for_function(f"() => {CAPTION}.includes('threshold {float(value):.2f}')", timeout=60000)


@pytest.mark.slow
def test_widget_in_jupyterlab(lab, tmp_path):
    pw = pytest.importorskip('playwright.sync_api')
    url, folder = lab
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1250, 'height': 1000})
            page.goto(url, wait_until='domcontentloaded')
            page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                                   timeout=120000)
            page.evaluate("() => { window.jupyterapp.commands.execute('application:toggle-left-area'); "
                          "window.jupyterapp.commands.execute('notebook:run-all-cells'); }")   # not awaited: it resolves when all ran
            page.wait_for_selector('.aidetect-confusion', timeout=240000)
            preds = pd.read_csv(folder / 'report' / 'predictions.csv')

            # rendered, nothing (no warning) printed by either cell, the positive class stated, no index column
            assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
            assert 'Warning' not in page.inner_text('.jp-Notebook')
            assert 'AI-generated is the positive class' in page.inner_text('.jp-Notebook')
            assert page.locator('.aidetect-metrics th').first.inner_text().strip() == 'n'
            assert page.evaluate(COUNTS) == expected(preds, 'scenes-test', 0.5)
            shot = tmp_path / 'widget.png'; page.locator('.jp-NotebookPanel').screenshot(path=str(shot)); keep_screenshot(shot)

            # a typed threshold where the counts differ from those at 0.5
            th = next(t for t in (0.3, 0.7, 0.2, 0.8, 0.1, 0.9, 0.05, 0.95, 0.01, 0.99)
                      if expected(preds, 'scenes-test', t) != expected(preds, 'scenes-test', 0.5))
            _type_threshold(page, f'{th}')
            assert page.evaluate(COUNTS) == expected(preds, 'scenes-test', th)

            # the slider dragged: the counts are those of the value it shows
            handle, track = page.locator('.noUi-handle').bounding_box(), page.locator('.noUi-target').bounding_box()
            y = handle['y'] + handle['height'] / 2
            page.mouse.move(handle['x'] + handle['width'] / 2, y); page.mouse.down()
            page.mouse.move(track['x'] + track['width'] * (0.85 if th < 0.5 else 0.15), y, steps=6); page.mouse.up()
            page.wait_for_function(f"() => !{CAPTION}.includes('threshold {th:.2f}')", timeout=60000)
            dragged = float(page.inner_text('.widget-readout'))
            page.wait_for_function(f"() => {CAPTION}.includes('threshold {dragged:.2f}')", timeout=60000)
            assert dragged != th and page.evaluate(COUNTS) == expected(preds, 'scenes-test', dragged)

            # the dataset picker switches datasets
            page.select_option('select:has(option[value="textures"])', 'textures')
            page.wait_for_function(f"() => {CAPTION}.startsWith('textures')", timeout=60000)
            assert page.evaluate(COUNTS) == expected(preds, 'textures', dragged)

            # the mistakes: 'k of N', sorted by P(wrong class), and thumbnails
            c = expected(preds, 'textures', dragged)
            page.get_by_role('button', name='show mistakes').click()
            page.wait_for_selector('.aidetect-mistakes-note', timeout=60000)
            if not c['fp'] + c['fn']:   # checked either way: no mistakes is said, not skipped
                assert page.inner_text('.aidetect-mistakes-note') == 'No mistakes at this threshold.'
            else:
                assert f"of {c['fp'] + c['fn']} mistakes" in page.inner_text('.aidetect-mistakes-note')
                wrong = [float(x) for x in page.locator('.aidetect-mistakes tbody tr td:nth-child(2)').all_inner_texts()]
                assert wrong == sorted(wrong, reverse=True)
                page.wait_for_selector('.widget-output img', timeout=60000)
            page.set_viewport_size({'width': 1250, 'height': 1900})   # the whole widget, thumbnails included
            shot = tmp_path / 'widget-mistakes.png'; page.locator('.jp-NotebookPanel').screenshot(path=str(shot))
            keep_screenshot(shot)

            # undefined metrics read n/a, never NaN
            _type_threshold(page, '1')
            d = preds[preds['dataset'] == 'textures']
            y, called_ai = (d['label'] == 'ai').to_numpy(), (d['prob_ai'] >= 1.0).to_numpy()
            # precision has no value without AI calls, recall without AI images, ROC AUC without both classes
            undefined = not called_ai.any() or not y.any() or y.all()
            text = page.inner_text('.aidetect-metrics')
            assert 'NaN' not in text and ('n/a' in text) == undefined
        finally: browser.close()
