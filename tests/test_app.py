"""Explanations and the web app: Grad-CAM files, the Gradio app through its Python client and a real browser."""
import os, re, shutil, socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import run_cli, noise_image

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def model(demo_data, tmp_path_factory):
    from aidetect.train import train_detector, export_detector
    learn = train_detector(demo_data['scenes-train'], size=96, bs=16, epochs=3, freeze_epochs=0, pretrained=False,
                           lr=1e-3, verbose=False, aug='none')
    return export_detector(learn, tmp_path_factory.mktemp('app-model') / 'scenes')


@pytest.fixture(scope='module')
def uploads(tmp_path_factory, demo_data):
    d = tmp_path_factory.mktemp('uploads')
    good = sorted((demo_data['textures'] / 'ai').rglob('*.png'))[0]
    shutil.copy(good, d / 'good.png')
    (d / 'truncated.jpg').write_bytes((d / 'good.png').read_bytes()[:300])
    (d / 'notes.png').write_text('not an image at all')
    Image.new('1', (20000, 10000)).save(d / 'bomb.png')
    frames = [noise_image(48, 40, seed=i).convert('P') for i in range(2)]
    frames[0].save(d / 'anim.gif', save_all=True, append_images=frames[1:], loop=0)
    return d


@pytest.fixture(scope='module')
def app_url(model):
    from aidetect.app import serve
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    app = serve([model['json']], port=port, block=False)
    yield f'http://127.0.0.1:{port}/'
    app.close()


def test_explain_writes_overlays_of_the_image_size(model, uploads, tmp_path):
    p = run_cli('aidetect', 'explain', model['json'], uploads / 'good.png', uploads / 'anim.gif', '--out', tmp_path,
                '--layer', 'layer3', check=0)
    assert 'P(AI)=' in p.stdout
    assert Image.open(tmp_path / 'good_gradcam.png').size == Image.open(uploads / 'good.png').size
    assert (tmp_path / 'anim_gradcam.png').exists()


def test_gradcam_has_the_image_size_and_differs_between_layers(model, demo_data):
    from aidetect.detector import load_detector
    from aidetect.evaluate import evaluate
    from aidetect.explain import gradcam
    det = load_detector(model['json'])
    res = evaluate(det, {'t': demo_data['textures']}, progress=False)
    img = demo_data['textures'] / res.preds.sort_values('prob_ai').path.iloc[-1]   # the surest AI call
    h3, h4 = gradcam(det, img, 'layer3'), gradcam(det, img, 'layer4')
    assert h3.shape == Image.open(img).size[::-1] and h3.sum() > 0 and h4.sum() > 0
    assert not np.allclose(h3, h4)
    fig = res.gradcam_gallery('t', 'tp', k=2)
    assert fig is not None and len(fig.axes) >= 2


def test_client_answers_good_and_bad_uploads(app_url, uploads, model):
    from gradio_client import Client, handle_file
    from aidetect.detector import load_detector
    from aidetect.images import open_image
    c = Client(app_url, verbose=False)
    labels, cam, verdict, info = c.predict(handle_file(str(uploads / 'good.png')), 'scenes', api_name='/detect')
    p = float(re.search(r'P\(AI\) = ([0-9.]+)', verdict).group(1))
    det = load_detector(model['json'])
    assert p == pytest.approx(float(det.predict_batch(det.prepare(open_image(uploads / 'good.png'))[None])[0]), abs=1e-3)
    assert cam and Path(cam).exists() and 'scenes-train' in info
    for bad, why in [('notes.png', 'not an image'), ('truncated.jpg', 'truncated'), ('bomb.png', 'too large')]:
        labels, cam, verdict, _ = c.predict(handle_file(str(uploads / bad)), 'scenes', api_name='/detect')
        assert verdict.startswith('**Not checked**') and why in verdict and cam is None, (bad, verdict)
    _, _, verdict, _ = c.predict(handle_file(str(uploads / 'anim.gif')), 'scenes', api_name='/detect')
    assert 'P(AI)' in verdict                                         # an animation: its first frame is checked


def test_app_refuses_pickles(model):
    p = run_cli('aidetect', 'app', model['pkl'], '--port', '7999')
    assert p.returncode == 2 and 'never a pickle' in p.stderr and 'Traceback' not in p.stderr


@pytest.mark.skipif(not CHROMIUM, reason='no Chromium on this machine (.ci/run installs Debian\'s chromium when it can)')
def test_browser_upload_shows_the_probability(app_url, uploads, tmp_path):
    pw = pytest.importorskip('playwright.sync_api')
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'])
        try:
            page = browser.new_page()
            page.goto(app_url, wait_until='networkidle')
            for name, expect in [('good.png', r'P\(AI\) = [0-9.]+'), ('notes.png', r'Not checked')]:
                page.set_input_files('input[type=file]', str(uploads / name))
                page.wait_for_selector(f'#upload >> text={name}', timeout=30000)   # the upload finished
                page.click('#detect')
                page.wait_for_function(f"() => /{expect}/.test(document.querySelector('#verdict').innerText)", timeout=60000)
                text = page.inner_text('#verdict')
                if name == 'good.png':
                    assert 0.0 <= float(re.search(r'P\(AI\) = ([0-9.]+)', text).group(1)) <= 1.0
                page.screenshot(path=str(tmp_path / f'{name}.png'), full_page=True)
                page.click('#upload button[aria-label="Clear"]')              # ready for the next upload
            assert (tmp_path / 'good.png.png').stat().st_size > 5000
        finally: browser.close()
