"""Explanations and the web app: Grad-CAM files, the Gradio app through its Python client and a real browser."""
import os, re, shutil, socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from conftest import CHROMIUM, CHROMIUM_ARGS, keep_screenshot, need_chromium, run_cli, noise_image


@pytest.fixture(scope='module')
def model(demo_data, tmp_path_factory):
    from aidetect.train import train_detector, export_detector
    learn = train_detector(demo_data['scenes-train'], size=96, bs=16, epochs=3, freeze_epochs=0, pretrained=False,
                           lr=1e-3, verbose=False, aug='none')
    return export_detector(learn, tmp_path_factory.mktemp('app-model') / 'scenes', pickle=True)


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


def test_explain_writes_image_and_overlay_with_a_colour_bar_and_records_bad_files(model, uploads, tmp_path):
    "A 64 px image gives a panel of at least 256 px (image | overlay, colour bar); a bad file among good ones is listed."
    (tmp_path / 'in').mkdir(); shutil.copy(uploads / 'good.png', tmp_path / 'in' / 'good.png')
    (tmp_path / 'in' / 'bad.jpg').write_bytes(b'not an image')
    p = run_cli('aidetect', 'explain', model['json'], tmp_path / 'in', uploads / 'anim.gif', '--out', tmp_path / 'o',
                '--layer', 'layer3', check=0)
    assert 'P(AI)=' in p.stdout and 'bad.jpg' in p.stderr and 'Traceback' not in p.stderr
    pic = Image.open(tmp_path / 'o' / 'good_gradcam.png')
    assert max(Image.open(uploads / 'good.png').size) <= 64 and max(pic.size) >= 256
    a = np.asarray(pic.convert('RGB'))[:, -80:-64]   # the colour bar's jet colours, right of the overlay
    assert (np.abs(a[..., 0].astype(int) - a[..., 2]) > 100).any()
    listed = pd.read_csv(tmp_path / 'o' / 'explain.csv').fillna('')
    assert sorted(Path(f).name for f in listed.path) == ['anim.gif', 'bad.jpg', 'good.png']
    assert (listed.set_index(listed.path.map(lambda f: Path(f).name)).loc['bad.jpg', 'reason']).startswith('not-an-image')
    assert (tmp_path / 'o' / 'anim_gradcam.png').exists()


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
    for bad, why in [('notes.png', 'not an image'), ('truncated.jpg', 'truncated'), ('bomb.png', 'more than 40,000,000 pixels')]:
        labels, cam, verdict, _ = c.predict(handle_file(str(uploads / bad)), 'scenes', api_name='/detect')
        assert verdict.startswith('**Not checked**') and why in verdict and cam is None, (bad, verdict)
    _, _, verdict, _ = c.predict(handle_file(str(uploads / 'anim.gif')), 'scenes', api_name='/detect')
    assert 'P(AI)' in verdict                                         # an animation: its first frame is checked


def test_app_refuses_pickles(model):
    p = run_cli('aidetect', 'app', model['pkl'], '--port', '7999')
    assert p.returncode == 2 and 'never a pickle' in p.stderr and 'Traceback' not in p.stderr


def _upload(page, path):
    "Drop `path` on the upload box, as a person does (the previous file, if any, is replaced)."
    if page.locator('#upload button[aria-label="Clear"]').count():
        page.click('#upload button[aria-label="Clear"]')
        page.wait_for_function("() => /Upload an image/.test(document.querySelector('#verdict').innerText)", timeout=30000)
    page.set_input_files('#upload input[type=file]', str(path))


def _verdict(page, pattern):
    page.wait_for_function(f"() => /{pattern}/.test(document.querySelector('#verdict').innerText)", timeout=90000)
    return page.inner_text('#verdict')


def _structured(det_json, images):
    "An image whose Grad-CAM map at the model's default layer is not empty (the surest AI call first), and P(AI)."
    from aidetect.detector import load_detector
    from aidetect.explain import flat_map, gradcam
    from aidetect.images import open_image
    det = load_detector(det_json)
    ps = [float(det.predict_batch(det.prepare(open_image(f))[None])[0]) for f in images]
    for p, f in sorted(zip(ps, images), reverse=True):
        if not flat_map(gradcam(det, f)): return f, p
    pytest.fail('no image with a non-empty Grad-CAM map')


def _shot(page, tmp_path, name):
    page.screenshot(path=str(tmp_path / name), full_page=True); keep_screenshot(tmp_path / name)


@pytest.mark.slow
def test_browser_app(detector_of_size, uploads, demo_data, tmp_path):
    "64 px and 224 px models: preview, verdict on upload, overlay with the layer named; no stale result; 1x1 and empty maps."
    need_chromium()
    pw = pytest.importorskip('playwright.sync_api')
    from aidetect.app import serve
    images = [f for d in ('textures', 'scenes-test') for f in sorted(demo_data[d].rglob('*.png'))]
    m64, m224, m32 = detector_of_size(64), detector_of_size(224), detector_of_size(32)
    Image.new('RGB', (1, 1), (200, 30, 30)).save(tmp_path / 'dot.png')
    apps, urls = [], []
    for models, layer in [({'m64': m64, 'm224': m224}, None), ({'m32': m32}, 'layer4')]:   # layer4 of a 32 px model is 1x1
        with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
        apps.append(serve(models, port=port, block=False, layer=layer)); urls.append(f'http://127.0.0.1:{port}/')
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={'width': 1250, 'height': 1000})
                page.goto(urls[0], wait_until='networkidle')
                img64, p64 = _structured(m64, images)
                _upload(page, img64)                                    # no button press: it answers on upload
                text = _verdict(page, r'P\(AI\) = [0-9.]+')
                assert 'Grad-CAM at layer3 (4×4 map at 64 px)' in text and 'empty' not in text
                assert float(re.search(r'P\(AI\) = ([0-9.]+)', text).group(1)) == pytest.approx(p64, abs=1e-3)
                page.wait_for_selector('#preview img'); page.wait_for_selector('#gradcam img')
                _shot(page, tmp_path, 'app-64px.png')

                _upload(page, uploads / 'notes.png')                    # a new upload: the old result goes at once
                text = _verdict(page, 'Not checked')
                assert 'P(AI)' not in text and 'not an image' in text
                assert page.locator('#gradcam img').count() == 0 and page.locator('#preview img').count() == 0
                _shot(page, tmp_path, 'app-not-an-image.png')

                _upload(page, tmp_path / 'dot.png')
                text = _verdict(page, 'Not checked')
                assert '1×1 px' in text and 'at least 32 px' in text and page.locator('#gradcam img').count() == 0
                page.wait_for_selector('#preview img')                  # still previewed, enlarged
                _shot(page, tmp_path, 'app-1x1.png')

                page.click('#model input'); page.get_by_role('option', name='m224').click()
                img224, p224 = _structured(m224, images)
                _upload(page, img224)
                text = _verdict(page, r'P\(AI\) = [0-9.]+')
                assert 'Grad-CAM at layer4 (7×7 map at 224 px)' in text and 'empty' not in text
                assert float(re.search(r'P\(AI\) = ([0-9.]+)', text).group(1)) == pytest.approx(p224, abs=1e-3)
                page.wait_for_selector('#gradcam img')
                _shot(page, tmp_path, 'app-224px.png')

                page.goto(urls[1], wait_until='networkidle')
                _upload(page, images[0])
                text = _verdict(page, r'P\(AI\) = [0-9.]+')
                assert 'Grad-CAM map is empty' in text and 'layer4' in text
                page.wait_for_selector('#gradcam img')                   # the panel says 'empty map' instead of a wash
                _shot(page, tmp_path, 'app-empty-map.png')
            finally: browser.close()
    finally:
        for a in apps: a.close()
