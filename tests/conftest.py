"""Shared fixtures: offline as a user is offline, a private model cache, the tiny generator, small image folders and
datasets (the examples' cache), a detector that has learnt them."""
import atexit, io, os, shutil, sys, subprocess, tempfile
from pathlib import Path

# Set before aidetect is imported: tests never touch (or depend on) the user's ~/.cache.
if 'AIDETECT_CACHE' not in os.environ:  # a private model cache per test session, removed at the end
    os.environ['AIDETECT_CACHE'] = tempfile.mkdtemp(prefix='aidetect-test-cache-')
    atexit.register(shutil.rmtree, os.environ['AIDETECT_CACHE'], ignore_errors=True)
os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')

# Offline the way a user is offline, whatever this machine has: no warm Hugging Face, torch or Kaggle caches or
# credentials (empty homes), the Hub in offline mode, and every proxy pointing at a closed local port, so a request
# that leaves the machine fails at once, as without a network. Local servers (the fake OpenAI API, the app) stay
# reachable. Set at import: huggingface_hub reads its settings once, when it is first imported.
_HOMES = tempfile.mkdtemp(prefix='aidetect-test-homes-')
atexit.register(shutil.rmtree, _HOMES, ignore_errors=True)
NOWHERE = 'http://127.0.0.1:9'   # the discard port: nothing listens
OFFLINE = {'HF_HOME': f'{_HOMES}/hf', 'TORCH_HOME': f'{_HOMES}/torch', 'KAGGLE_CONFIG_DIR': f'{_HOMES}/kaggle',
           'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
           **{k: NOWHERE for k in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy')},
           **{k: '127.0.0.1,localhost,::1' for k in ('NO_PROXY', 'no_proxy')}}
for _k in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'KAGGLE_USERNAME', 'KAGGLE_KEY', 'OPENAI_API_KEY', 'OPENAI_BASE_URL'):
    os.environ.pop(_k, None)
os.environ.update(OFFLINE)

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_cli(*args, env=None, timeout=600, check=None):
    "Run a console script (aidetect, aidetect-gen, ...) from this environment; returns the CompletedProcess."
    e = {**os.environ, **(env or {})}
    p = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True, env=e, timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError(f'{args} exited {p.returncode}, expected {check}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}')
    return p


def dataset_files(d: Path) -> dict:
    """A dataset folder's files and their bytes: not the run log, nor the lock (it names the last writer); the 🤗 card with
    the folder's own name taken out (it is titled after its folder), so datasets made in two folders compare equal."""
    d = Path(d)
    out = {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob('*')
           if p.is_file() and p.name not in ('runs.jsonl', '.aidetect.lock')}
    if 'README.md' in out:
        card = out['README.md'].decode()
        for pat in ('pretty_name: {}\n', '# {}\n', 'data_dir="{}"', 'aidetect audit {}'): card = card.replace(pat.format(d.name), pat.format('DS'))
        out['README.md'] = card.encode()
    return out


def noise_image(w=64, h=48, seed=0, mode='RGB'):
    "A random RGB image (converted to `mode`)."
    a = np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a).convert(mode)


@pytest.fixture(scope='session', autouse=True)
def offline():
    "Every test runs offline (set above, at import); checked once, so a plugin or import that came first can't undo it."
    import huggingface_hub.constants as hub, urllib.request
    for k, v in OFFLINE.items(): assert os.environ.get(k) == v, (k, os.environ.get(k))
    assert hub.HF_HUB_OFFLINE and Path(hub.HF_HOME) == Path(OFFLINE['HF_HOME']), 'huggingface_hub was imported before conftest'
    assert urllib.request.getproxies()['https'] == NOWHERE and urllib.request.proxy_bypass('127.0.0.1')
    return OFFLINE


@pytest.fixture(scope='session')
def tiny_backend():
    from aidetect.gen.backends import SDBackend
    return SDBackend('tiny', steps=3)


@pytest.fixture
def photo_folder(tmp_path):
    "A small SRC folder: 2 categories, JPEG and PNG photos."
    src = tmp_path / 'src'
    for i in range(3):
        (src / 'cat').mkdir(parents=True, exist_ok=True); (src / 'dog').mkdir(exist_ok=True)
        noise_image(64, 48, seed=i).save(src / 'cat' / f'c{i}.jpg', quality=80)
        noise_image(40, 64, seed=10 + i).save(src / 'dog' / f'd{i}.png')
    return src


@pytest.fixture(scope='session')
def demo_data():
    "The demo's three small datasets (scenes-train, scenes-test, textures): the examples' cache, built once per run. Read only."
    from aidetect.demo import example_datasets
    return example_datasets(per_photo=4, steps=3, size=64)


@pytest.fixture(scope='session')
def example_cnn(demo_data):
    "The .json of a small CNN trained on scenes-train that separates the example data (`aidetect.demo.example_cnn`)."
    from aidetect.demo import example_cnn
    return example_cnn()


CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


def need_chromium(path=CHROMIUM):
    "Skip a browser test without Chromium; under CI=true fail it instead, with one line saying what to install."
    if path: return path
    msg = "no Chromium on PATH: install Debian's chromium (apt-get install chromium), as .ci/run does"
    if os.environ.get('CI') == 'true': pytest.fail(f'{msg}; CI must run the browser tests', pytrace=False)
    pytest.skip(msg)
# Without the background-networking flags Chromium keeps trying to reach Google's services, which a closed network refuses.
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--disable-dev-shm-usage', '--no-first-run']


def keep_screenshot(path):
    "Copy a screenshot to $AIDETECT_SCREENSHOTS too (when set), for a person to look at."
    if os.environ.get('AIDETECT_SCREENSHOTS'):
        Path(os.environ['AIDETECT_SCREENSHOTS']).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ['AIDETECT_SCREENSHOTS']) / Path(path).name)


@pytest.fixture(scope='session')
def detector_of_size(demo_data, tmp_path_factory):
    "A function: input size in px -> .json of a ResNet34 trained from scratch on scenes-train (once per size)."
    made = {}
    def make(size):
        if size not in made:
            from aidetect.train import train_detector, export_detector
            # 9 small batches: enough for BatchNorm's running statistics to be usable (2 batches leave every P(AI) at 0)
            learn = train_detector(demo_data['scenes-train'], size=size, bs=8, epochs=3, freeze_epochs=0, pretrained=False,
                                   lr=1e-3, verbose=False, aug='none')
            made[size] = export_detector(learn, tmp_path_factory.mktemp(f'detector-{size}') / f'm{size}')['json']
        return made[size]
    return make


def sklearn_intervals(preds, counts, codes):
    """The 95 % intervals (low, high of accuracy, ROC AUC, AP) of `preds` (label, prob_ai) over the group resamples
    `counts` of group codes `codes`: each resample's rows taken from the table itself and scored by sklearn."""
    import warnings
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score, average_precision_score
    labels, probs = preds['label'].to_numpy(), preds['prob_ai'].to_numpy()
    members = [np.flatnonzero(codes == g) for g in range(counts.shape[1])]
    reps = []
    for c in counts:
        idx = np.concatenate([np.tile(members[g], k) for g, k in enumerate(c) if k])
        y, p = (labels[idx] == 'ai').astype(int), probs[idx]
        reps.append([accuracy_score(y, p >= 0.5), roc_auc_score(y, p) if 0 < y.sum() < len(y) else np.nan,
                     average_precision_score(y, p) if y.sum() else np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # all-NaN columns (one class in every resample) stay NaN
        return np.nanpercentile(np.array(reps), [2.5, 97.5], axis=0).T.ravel()


def file_size_limit(n):
    "For `subprocess`'s `preexec_fn`: in the child, writes past `n` bytes fail with EFBIG (as a full disk fails with ENOSPC) instead of SIGXFSZ killing it."
    import resource, signal
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return limit
