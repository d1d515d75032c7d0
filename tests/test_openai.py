"""The OpenAI backend against a local server that speaks the images API, through the official `openai` client."""
import base64, email, io, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np, pandas as pd
import pytest
from PIL import Image

from conftest import run_cli
from aidetect.core import AidetectError
from aidetect.dataset import read_manifest, read_rejected
from aidetect.gen.backends import OPENAI_MODEL, VARIATION_PROMPT, OpenAIBackend
from aidetect.gen.run import VariationJob, run_variations

FREE = ('gpt-image-2', 'gpt-image-2.5-sunburst', 'gpt-image-2.5-flare', 'gpt-image-2.6-sunburst', 'gpt-image-2.6-flare')
REMOVED = ('dall-e-2', 'dall-e-3', 'gpt-image-1')


def _error(status, code, message, param=None, type='invalid_request_error', **extra):
    return status, {'error': dict(message=message, type=type, param=param, code=code, **extra)}


DROP = 'drop the connection'
REFUSAL = _error(400, 'moderation_blocked', 'Your request was rejected by the safety system. safety_violations=[violence].',
                 type='image_generation_user_error', moderation_details={'moderation_stage': 'input', 'categories': ['violence']})
POLICY = _error(400, 'content_policy_violation', 'Your request was rejected as a result of our safety system. Your prompt may '
                'contain text that is not allowed by our safety system.')


class ImagesAPI(BaseHTTPRequestHandler):
    """POST /v1/images/edits and /v1/images/variations, checked the way the API checks them (models, sizes, parameters,
    MIME types); the answer is the input image at the size asked for, with a little noise, as PNG.
    `server.answer(n, fields)` may return (status, body[, headers]) instead, for the n-th request (from 1), or DROP."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        msg = email.message_from_bytes(b'Content-Type: ' + self.headers['Content-Type'].encode() + b'\r\n\r\n' + body)
        parts = {p.get_param('name', header='content-disposition'): p for p in msg.get_payload()}
        fields = {k: (p.get_payload(decode=True) if k == 'image' else p.get_payload(decode=True).decode()) for k, p in parts.items()}
        fields['image_type'] = parts['image'].get_content_type() if 'image' in parts else None
        srv = self.server
        with srv.lock: srv.requests.append((self.path, self.headers.get('Authorization'), fields)); n = len(srv.requests)
        scripted = srv.answer(n, fields) if srv.answer else None
        if scripted == DROP: self.close_connection = True; return   # hang up without an answer
        self._send(*(scripted or self._answer(fields)))

    def _answer(self, f):
        model, size = f.get('model', ''), f.get('size', '')
        if model in REMOVED and model not in self.server.serves:
            return _error(404, 'model_not_found', f'The model `{model}` has been deprecated, learn more here: '
                                                  'https://platform.openai.com/docs/deprecations')
        if self.path.endswith('/images/variations'):
            if model != 'dall-e-2': return _error(400, 'invalid_value', f"Invalid value: '{model}'.", 'model')
            if size not in ('256x256', '512x512', '1024x1024'): return _error(400, 'invalid_value', f"Invalid value: '{size}'.", 'size')
            if f.get('response_format') != 'b64_json': return 200, {'created': 0, 'data': [{'url': 'https://x/y.png'}]}
        else:
            if 'response_format' in f: return _error(400, 'unknown_parameter', "Unknown parameter: 'response_format'.", 'response_format')
            if model in FREE and 'input_fidelity' in f:
                return _error(400, 'invalid_input_fidelity_model', f"The model '{model}' does not support the 'input_fidelity' "
                              'parameter.', 'input_fidelity', type='image_generation_user_error')
            if not f.get('prompt'): return _error(400, 'missing_required_parameter', "Missing required parameter: 'prompt'.", 'prompt')
            w, h = map(int, size.split('x')) if 'x' in size else (0, 0)
            ok = (w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h) and 655_360 <= w * h <= 8_294_400
                  and max(w, h) <= 3840) if model in FREE else (w, h) in ((1024, 1024), (1536, 1024), (1024, 1536))
            if not ok: return _error(400, 'invalid_value', f"Invalid value: '{size}'. Supported sizes are multiples of 16 ...", 'size')
        if f['image_type'] not in ('image/png', 'image/jpeg', 'image/webp'):
            return _error(400, 'unsupported_file_mimetype', f"Invalid file 'image': unsupported mimetype ('{f['image_type']}').", 'image')
        w, h = map(int, size.split('x'))
        a = np.asarray(Image.open(io.BytesIO(f['image'])).convert('RGB').resize((w, h), Image.BILINEAR), dtype=np.int16)
        a = a + np.random.default_rng(len(f['image'])).integers(-3, 4, a.shape)   # a variation: not the same pixels
        buf = io.BytesIO(); Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, 'PNG', compress_level=1)
        return 200, {'created': 0, 'output_format': 'png', 'size': size,
                     'data': [{'b64_json': base64.b64encode(buf.getvalue()).decode()}]}

    def _send(self, code, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(code); self.send_header('Content-Type', 'application/json')
        for k, v in (headers or {}).items(): self.send_header(k, v)
        self.send_header('Content-Length', str(len(data))); self.end_headers(); self.wfile.write(data)

    def log_message(self, *a): pass


@pytest.fixture
def api():
    "A local images API on 127.0.0.1: `api.url`, `api.requests`, `api.answer`, `api.serves` (removed models it still serves)."
    srv = ThreadingHTTPServer(('127.0.0.1', 0), ImagesAPI)
    srv.requests, srv.answer, srv.serves, srv.lock = [], None, set(), threading.Lock()
    srv.url = f'http://127.0.0.1:{srv.server_port}/v1'
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown(); srv.server_close()


def _backend(api, model=OPENAI_MODEL, **kw):
    return OpenAIBackend(model, api_key='sk-test', base_url=api.url, max_retries=kw.pop('max_retries', 1), **kw)


def _run(src, out, backend, **kw):
    return run_variations(VariationJob(src=str(src), out=str(out), **kw), backend, progress=False, log=lambda m: None)


def _variations(env_url, src, out, *args):
    "`aidetect-gen variations` with the OpenAI backend against the local server (client retries: 1)."
    return run_cli('aidetect-gen', 'variations', src, '--out', out, '--backend', 'openai', '--base-url', env_url,
                   '--api-retries', '1', '-q', *args, env={'OPENAI_API_KEY': 'sk-test'})


def _one_line(p):
    "The CLI stopped with one line on stderr, exit status 2, no traceback; returns that line."
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and 'Traceback' not in p.stderr and lines[-1].startswith('aidetect-gen: error: '), p.stderr
    assert sum('error' in l for l in lines) == 1, p.stderr
    return lines[-1]


def test_edits_make_a_matched_dataset_with_the_prompt(api, photo_folder, tmp_path):
    out = tmp_path / 'ds'
    s = _run(photo_folder, out, _backend(api), size_policy='matched')
    m = read_manifest(out)
    ai = m[m.label == 'ai']
    assert s.done == 6 and len(ai) == 6 and not len(read_rejected(out))
    assert (ai.prompt == VARIATION_PROMPT).all() and (ai.model == OPENAI_MODEL).all() and ai.seed.isna().all()
    assert (ai.conditioning == 'images.edit quality=high output_format=png').all() and (m.loc[m.label == 'real', 'prompt'] == '').all()
    path, auth, f = api.requests[0]
    assert path == '/v1/images/edits' and auth == 'Bearer sk-test' and f['image_type'] == 'image/png'
    assert f['output_format'] == 'png' and f['quality'] == 'high' and f['n'] == '1' and f['prompt'] == VARIATION_PROMPT
    assert {r[2]['size'] for r in api.requests} == {'944x704', '640x1024'}    # 64x48 and 40x64 photos, up to 655,360 px
    for g, d in m.groupby('group'):   # each group: one size and format; the AI image downscaled, never upsampled
        assert d[['width', 'height', 'format']].drop_duplicates().shape[0] == 1, g
    assert set(ai['resample']) == {'crop+down-lanczos', 'down-lanczos'}
    assert _run(photo_folder, out, _backend(api), size_policy='matched').done == 0 and len(api.requests) == 6   # resumed: no new requests


def test_a_429_is_retried_by_the_client_and_the_image_kept(api, photo_folder, tmp_path):
    api.answer = lambda n, f: (*_error(429, 'rate_limit_exceeded', 'Rate limit reached. Please try again in 0s.', type='requests'),
                               {'retry-after-ms': '10'}) if n == 1 else None
    s = _run(photo_folder, tmp_path / 'ds', _backend(api), limit=2)
    assert s.done == 2 and len(api.requests) == 3 and not len(read_rejected(tmp_path / 'ds'))


@pytest.mark.parametrize('refusal, words', [(REFUSAL, 'rejected by the safety system. safety_violations=[violence].'),
                                             (POLICY, 'is not allowed by our safety system.')], ids=['moderation_blocked', 'content_policy_violation'])
def test_a_refusal_is_recorded_with_the_api_words_and_retried_as_asked(api, photo_folder, tmp_path, refusal, words):
    "A 400 from the safety system skips that photo with the API's words in rejected.csv; the run carries on."
    Image.new('RGB', (64, 48), (250, 0, 0)).save(photo_folder / 'cat' / 'c1.jpg', quality=80)   # what the fake refuses
    api.answer = lambda n, f: refusal if np.asarray(Image.open(io.BytesIO(f['image']))).mean(axis=(0, 1))[1] < 30 else None
    out = tmp_path / 'ds'
    s = _run(photo_folder, out, _backend(api), max_retries=2)
    rej = read_rejected(out)
    assert s.done == 5 and s.blacked_out == 1 and len(api.requests) == 5 + 3      # the refused one: 1 try + 2 retries
    assert rej.path.tolist() == ['ai/gpt-image-2.6-sunburst/cat/c1__v0'] and rej.reason.tolist() == ['safety-refusal']
    assert f'{words} (3 times); no variation kept' in rej.detail[0]
    assert 'seed' not in rej.detail[0]
    assert _run(photo_folder, out, _backend(api), max_retries=2).done == 0 and len(api.requests) == 8   # given up: done


@pytest.mark.parametrize('type, code', [('insufficient_quota', 'insufficient_quota'), ('insufficient_quota', 'credit_balance_exhausted')])
def test_an_account_out_of_quota_stops_at_once_with_one_line_about_billing(api, photo_folder, tmp_path, type, code):
    "A billing 429 is not retried (waiting cannot help), although the client retries other 429s; finished images stay."
    api.answer = lambda n, f: _error(429, code, 'You exceeded your current quota, please check your plan and billing details.',
                                     type=type) if n > 2 else None
    out = tmp_path / 'ds'
    line = _one_line(_variations(api.url, photo_folder, out, '--batch-size', '1', '--api-retries', '3'))
    assert f'out of quota or credit (HTTP 429, {code}: You exceeded your current quota' in line and 'billing' in line
    assert len(api.requests) == 3 and (read_manifest(out).label == 'ai').sum() == 2 and not len(read_rejected(out))
    api.answer = None
    assert _run(photo_folder, out, _backend(api), batch_size=1).done == 4 and len(api.requests) == 7


def test_a_wrong_api_key_stops_with_one_line_naming_openai_api_key(api, photo_folder, tmp_path):
    api.answer = lambda n, f: _error(401, 'invalid_api_key', 'Incorrect API key provided: sk-test. You can find your API key '
                                     'at https://platform.openai.com/account/api-keys.')
    out = tmp_path / 'ds'
    line = _one_line(_variations(api.url, photo_folder, out, '--batch-size', '1', '--api-retries', '3'))
    assert line.endswith('OpenAI refused the API key (HTTP 401: Incorrect API key provided: sk-test. You can find your API key '
                         'at https://platform.openai.com/account/api-keys.): check OPENAI_API_KEY')
    assert len(api.requests) == 1 and not len(read_rejected(out))                                  # a 401 is not retried


def test_a_dropped_connection_is_retried_then_stops_with_a_clear_line(api, photo_folder, tmp_path):
    out = tmp_path / 'ds'
    api.answer = lambda n, f: DROP if n == 1 else None                  # one dropped connection: retried, the image kept
    assert _run(photo_folder, out, _backend(api), batch_size=1, limit=2).done == 2 and len(api.requests) == 3
    api.answer = lambda n, f: DROP                                      # the line stays down
    line = _one_line(_variations(api.url, photo_folder, out, '--batch-size', '1', '--limit', '3'))
    assert 'could not reach the OpenAI API after 1 retries (Connection error.)' in line and 'check the network' in line
    assert len(api.requests) == 3 + 2 and (read_manifest(out).label == 'ai').sum() == 2


def test_a_rate_limit_that_lasts_says_to_ask_less_at_once(api, photo_folder, tmp_path):
    api.answer = lambda n, f: (*_error(429, 'rate_limit_exceeded', 'Rate limit reached for images per minute.', type='requests'),
                               {'retry-after-ms': '10'})
    line = _one_line(_variations(api.url, photo_folder, tmp_path / 'ds', '--batch-size', '1', '--limit', '1'))
    assert 'kept failing after 1 retries (HTTP 429: Rate limit reached for images per minute.)' in line
    assert line.endswith('lower --requests-per-minute or --batch-size') and len(api.requests) == 2   # retried once, as asked


def test_a_removed_model_stops_with_one_line_and_a_current_model_finishes(api, photo_folder, tmp_path):
    out = tmp_path / 'ds'
    line = _one_line(_variations(api.url, photo_folder, out, '--openai-model', 'dall-e-2', '--size', '512'))
    assert 'OpenAI removed dall-e-2 from its API on 2026-05-12: use --openai-model gpt-image-2.6-sunburst' in line
    assert '`aidetect-gen import`' in line and len(api.requests) <= 4 and not len(read_rejected(out))   # one batch in flight
    with pytest.raises(AidetectError, match='removed gpt-image-1 from its API on 2026-10-23: use --openai-model'):
        _run(photo_folder, out, _backend(api, 'gpt-image-1'))
    s = _run(photo_folder, out, _backend(api))
    m = read_manifest(out)
    assert s.done == 6 and (m.label == 'ai').sum() == 6 and (m.label == 'real').sum() == 6


def test_dall_e_2_still_works_where_the_endpoint_serves_it(api, photo_folder, tmp_path):
    api.serves = {'dall-e-2'}
    api.answer = lambda n, f: (*_error(429, None, 'Rate limit reached', type='requests'), {'retry-after': '0'}) if n == 1 else None
    out = tmp_path / 'ds'
    s = _run(photo_folder, out, _backend(api, 'dall-e-2', max_retries=3), size=256)
    m = read_manifest(out)
    ai = m[m.label == 'ai']
    assert s.done == 6 and len(api.requests) == 7 and api.requests[1][0] == '/v1/images/variations'
    assert (ai.generator == 'dall-e-2').all() and ai.seed.isna().all() and (ai.prompt == '').all()
    assert set(ai.format) == {'JPEG', 'PNG'}                                      # saved like their sources
    assert {Image.open(io.BytesIO(r[2]['image'])).size for r in api.requests} == {(48, 48), (40, 40)}   # centre squares
    with pytest.raises(AidetectError, match='2026-05-12'): OpenAIBackend('dall-e-2', api_key='sk-test')   # OpenAI's own API


def test_a_size_the_model_does_not_make_stops_with_the_api_message(api, photo_folder, tmp_path):
    api.answer = lambda n, f: _error(400, 'invalid_value', f"Invalid value: '{f['size']}'. Supported values are: '1024x1024', "
                                     "'1024x1536', '1536x1024', and 'auto'.", 'size')
    out = tmp_path / 'ds'
    line = _one_line(_variations(api.url, photo_folder, out, '--limit', '1'))
    assert "refused the request for gpt-image-2.6-sunburst (HTTP 400, invalid_value, parameter size): Invalid value: '944x704'" in line
    assert len(api.requests) == 1 and not len(read_rejected(out))    # one request, no retries, no refusal rows
    api.answer = None
    assert _run(photo_folder, out, _backend(api), limit=1).done == 1


def test_a_run_of_500s_keeps_finished_images_and_a_rerun_finishes(api, photo_folder, tmp_path):
    api.answer = lambda n, f: _error(500, None, 'The server had an error while processing your request.', type='server_error') \
        if n > 4 else None
    out = tmp_path / 'ds'
    line = _one_line(_variations(api.url, photo_folder, out, '--batch-size', '2'))
    assert 'kept failing after 1 retries (HTTP 500: The server had an error' in line
    assert 'finished images are kept; rerun the same command later' in line
    m = read_manifest(out)
    # batches (one size each): [c0 c1] [c2] [d0 d1] [d2]: in [d0 d1] one request was answered before the 500s began,
    # and that image is kept although its batch stopped the run (paid for once)
    assert (m.label == 'ai').sum() == 4 and not len(read_rejected(out))
    api.answer, n = None, len(api.requests)
    assert _run(photo_folder, out, _backend(api), batch_size=2).done == 2 and len(api.requests) == n + 2


def _photo(w, h, seed):
    "A smooth photo-like image with a little grain."
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(small, dtype=float) + rng.normal(0, 4, (h, w, 1)), 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_the_default_model_makes_a_dataset_that_passes_the_audit(api, tmp_path):
    src = tmp_path / 'photos'
    sizes = [(300, 200), (96, 64), (120, 160), (256, 192), (200, 300), (160, 107), (150, 100), (128, 128),
             (240, 160), (80, 120), (192, 108), (111, 167)]
    for i, (w, h) in enumerate(sizes):
        (src / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        _photo(w, h, i).save(src / f'c{i % 2}' / f'{i:02d}.jpg', quality=[60, 75, 85, 92, 95][i % 5], subsampling=i % 3)
    out = tmp_path / 'ds'
    p = _variations(api.url, src, out, '--openai-model', OPENAI_MODEL, '--prompt', 'Another photo of this scene.')
    assert p.returncode == 0, p.stderr
    m = read_manifest(out)
    ai = m[m.label == 'ai']
    assert len(ai) == 12 and (ai.prompt == 'Another photo of this scene.').all() and not ai['resample'].str.contains('up').any()
    for g, d in m.groupby('group'):
        assert d[['width', 'height', 'format']].drop_duplicates().shape[0] == 1, g
        tables = {Image.open(out / q).quantization.__repr__() for q in d.path}
        assert len(tables) == 1, g                                                   # the same JPEG tables
    run_cli('aidetect', 'audit', out, '--bootstrap', '100', '--report', tmp_path / 'rep', check=0)
    assert abs(pd.read_csv(tmp_path / 'rep' / 'audit.csv').auc.iloc[0] - 0.5) <= 0.1   # two-sided: below 0.4 is a shortcut too
