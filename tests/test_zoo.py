"""The generator zoo: each backend fed as its card or pipeline says, tiny presets that round-trip and generate offline,
several generators making matched counterparts of the same photos into one dataset, crash-safe."""
import functools, json, signal, subprocess, time
from pathlib import Path

import numpy as np, pandas as pd, torch
import pytest
from PIL import Image
from torchvision import transforms as T

from conftest import dataset_files, BIN, run_cli, noise_image
from aidetect.dataset import read_manifest, read_rejected
from aidetect.gen.zoo.load import ZOO, load_generator, zoo_preset_dir

PHOTOS = [noise_image(48, 48, seed=1), noise_image(80, 40, seed=2)]   # a square and a non-square photo
MODELS = [n for n, e in ZOO.items() if e.kind != 'control']   # generators with a model (the identity control is in test_sizing.py)
BICUBIC = T.InterpolationMode.BICUBIC


@functools.lru_cache(maxsize=None)
def _tiny(name):
    "Generator `name`'s tiny preset, loaded once per session."
    return load_generator(name, 'tiny', device='cpu', steps=4 if name == 'sdxl-img2img' else 2)   # 4 x 0.3: one step


def _prep(b, photo, dims):
    return b.prepare(photo, dims)


def _px(im) -> np.ndarray: return np.asarray(im, dtype=int)


# --- conditioning: exactly as the card or the pipeline's processor says ------------------------------------------

def test_sd_variations_is_fed_the_cards_transform():
    b = _tiny('sd-variations')
    fe = b.pipe.feature_extractor
    card = T.Compose([T.ToTensor(), T.Resize((b.encoder_size,) * 2, interpolation=BICUBIC, antialias=False),
                      T.Normalize(fe.image_mean, fe.image_std)])
    for p in PHOTOS: torch.testing.assert_close(b.prepare(p), card(p), atol=1e-5, rtol=0)


# the conditioning checks (each generator fed its card's or pipeline's transform) are in the zoo notebooks, 18d-18i


def _fitted(photo, w, h):
    "The photo centre-cropped to w:h and resized with Lanczos, by hand (the crop of 80x40 to 8:5 is 64x40)."
    pw, ph = photo.size
    cw, ch = (round(ph * w / h), ph) if pw * h > ph * w else (pw, round(pw * h / w))
    l, t = (pw - cw) // 2, (ph - ch) // 2
    return photo.resize((w, h), Image.LANCZOS, box=(l, t, l + cw, t + ch))


# --- the backend's route gives what the pipeline's own documented route gives ----------------------------------

def _same_image(a, b, tol=2):
    assert a.size == b.size and np.abs(_px(a) - _px(b)).max() <= tol, np.abs(_px(a) - _px(b)).max()


def _own_route(name, b, photo, w, h, seed):
    "What the pipeline makes when handed the photo itself, as its documentation shows."
    g = torch.Generator('cpu').manual_seed(seed)
    kw = dict(height=h, width=w, num_inference_steps=b.steps, guidance_scale=b.guidance, generator=g)
    if name == 'sd21-unclip': return b.pipe(image=photo, prompt='', noise_level=b.noise_level, **kw).images[0]
    if name.endswith('ipadapter'): return b.pipe(prompt='', ip_adapter_image=photo, **kw).images[0]
    fitted = _fitted(photo, w, h)
    if name.endswith('img2img'):
        del kw['height'], kw['width']
        return b.pipe(prompt='', image=fitted, strength=b.strength, **kw).images[0]
    if name == 'inpaint-recon':
        return b.pipe(prompt='', image=fitted, mask_image=Image.new('L', (w, h), 0), strength=b.strength, **kw).images[0]
    raise ValueError(name)


@pytest.mark.parametrize('name', ['sd21-unclip', 'sd15-ipadapter', 'sdxl-ipadapter', 'sd15-img2img', 'sdxl-img2img', 'inpaint-recon'])
def test_backend_makes_what_the_pipeline_makes_of_the_photo(name):
    b = _tiny(name)
    for p in PHOTOS:
        w, h = b.generation_dims(*p.size) if p.size == (48, 48) else b.generation_dims(64, 40)
        ours = b.generate([_prep(b, p, (w, h))], [7], w, h)[0].image
        _same_image(ours, _own_route(name, b, p, w, h, 7))


def test_kandinsky_embeddings_are_the_priors_interpolate():
    "KandinskyV22PriorPipeline.interpolate([photo], [1.0]): the documented way to condition Kandinsky 2.2 on an image."
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from aidetect.gen.zoo.parts import clip_text, tiny_clip_tokenizer
    b = _tiny('kandinsky22')
    enc = b.parts['image_encoder']
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=enc.config.projection_dim, num_layers=1)
    pp = KandinskyV22PriorPipeline(prior=prior, image_encoder=enc, text_encoder=clip_text('tiny', projection=True),
                                   tokenizer=tiny_clip_tokenizer(), image_processor=b.parts['image_processor'],
                                   scheduler=UnCLIPScheduler(clip_sample=True, clip_sample_range=10.0, prediction_type='sample'))
    pp.set_progress_bar_config(disable=True)
    for p in PHOTOS:
        ref = pp.interpolate([p], [1.0], num_inference_steps=2)
        emb, neg = b.embeds([b.prepare(p)])
        torch.testing.assert_close(emb, ref.image_embeds, atol=1e-5, rtol=0)
        torch.testing.assert_close(neg, ref.negative_image_embeds, atol=1e-5, rtol=0)


def test_flux_redux_prompts_are_the_prior_pipelines_one_photo_at_a_time():
    b = _tiny('flux-redux')
    embeds, pooled = b.prompts([b.prepare(p) for p in PHOTOS])   # two photos at once: two prompts, not their sum
    for i, p in enumerate(PHOTOS):
        ref = b.parts['redux'](p)
        torch.testing.assert_close(embeds[i:i + 1], ref.prompt_embeds, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(pooled[i:i + 1], ref.pooled_prompt_embeds)


@pytest.mark.parametrize('name', MODELS)
def test_a_batch_is_its_images_made_one_by_one(name):
    "Each image of a batch comes from its own photo and seed alone: no conditioning is shared or blended across a batch."
    b = _tiny(name)
    dims = b.generation_dims(64, 40)
    conds = [_prep(b, p, dims) for p in PHOTOS]
    both = b.generate(conds, [1, 2], *dims)
    assert [v.image.size for v in both] == [dims] * 2 and not any(v.flagged for v in both)
    for c, s, v in zip(conds, [1, 2], both): _same_image(b.generate([c], [s], *dims)[0].image, v.image, tol=3)
    assert _px(both[0].image).tolist() != _px(both[1].image).tolist()


# --- presets: the same classes, saved with save_pretrained, loaded with from_pretrained -------------------------

ROLES = {'kandinsky22': {'prior': 'image_encoder/config.json', 'decoder': 'model_index.json'},
         'sd15-ipadapter': {'pipeline': 'model_index.json', 'adapter': 'models/ip-adapter_sd15.safetensors'},
         'sdxl-ipadapter': {'pipeline': 'model_index.json', 'adapter': 'sdxl_models/ip-adapter_sdxl.safetensors'},
         'flux-redux': {'redux': 'model_index.json', 'pipeline': 'model_index.json'}, 'vae-roundtrip': {'': 'config.json'}}


@pytest.mark.parametrize('name', MODELS)
def test_tiny_preset_is_a_save_pretrained_folder_of_the_real_classes(name):
    import diffusers
    d = zoo_preset_dir(name, 'tiny')
    for role, f in ROLES.get(name, {'': 'model_index.json'}).items(): assert (d / role / f).is_file(), (role, f)
    b = _tiny(name)
    pipes = [p for p in b.parts.values() if isinstance(p, diffusers.DiffusionPipeline)] if hasattr(b, 'parts') else [b.pipe]
    classes = ' + '.join(type(p).__name__ for p in pipes) or type(b.parts['vae']).__name__
    assert all(c in ZOO[name].pipeline for c in classes.split(' + ')), (classes, ZOO[name].pipeline)
    d = b.describe()
    assert d['generator'] == name and d['model'] == 'tiny' and d['conditioning'] and b.default_size == 64
    assert b.kind == ZOO[name].kind


# --- several generators, one dataset ----------------------------------------------------------------------------

def _photo(w, h, seed):
    "A smooth photo-like image: low-frequency colour fields plus a little grain."
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(small, dtype=float) + rng.normal(0, 4, (h, w, 1)), 0, 255).astype(np.uint8))


FIVE = ['sd-variations', 'sd21-unclip', 'kandinsky22', 'sd15-img2img', 'vae-roundtrip']


@pytest.fixture(scope='module')
def zoo_dataset(tmp_path_factory):
    "Five generators' counterparts of mixed-size JPEGs (300 to 3000 px, mixed qualities), made offline by the CLI."
    root = tmp_path_factory.mktemp('zoo')
    src = root / 'photos'
    sizes = [(300, 200), (3000, 2000), (480, 640), (1024, 768), (2000, 3000), (640, 427), (350, 350), (800, 1200)]
    for i, (w, h) in enumerate(sizes):
        (src / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        _photo(w, h, i).save(src / f'c{i % 2}' / f'{i:02d}.jpg', quality=[60, 75, 85, 92, 95][i % 5], subsampling=i % 3)
    p = run_cli('aidetect-gen', 'variations', src, '--out', root / 'ds', '--generator', ','.join(FIVE), '--model', 'tiny',
                '--steps', '2', '--quiet', env={'HF_HUB_OFFLINE': '1'}, check=0)
    return src, root / 'ds', p


def test_every_group_holds_the_real_image_and_one_counterpart_per_generator_all_alike(zoo_dataset):
    src, out, p = zoo_dataset
    m = read_manifest(out)
    assert len(read_rejected(out)) == 0 and len(m) == 8 * (1 + len(FIVE)), p.stderr
    for g, d in m.groupby('group'):
        assert sorted(d.loc[d.label == 'ai', 'generator']) == sorted(FIVE) and (d.label == 'real').sum() == 1, g
        assert d[['width', 'height', 'format']].drop_duplicates().shape[0] == 1, d   # one size, one format
        assert d.loc[d.label == 'ai', 'seed'].nunique() == 1                          # the same seed for every generator
        for f in d.path:
            with Image.open(out / f) as im: assert im.size == (d.width.iloc[0], d.height.iloc[0])
    ai = m[m.label == 'ai']
    assert not ai['resample'].str.contains('up').any()                                  # no AI image is upsampled
    assert set(ai.groupby('generator')['model'].first()) == {'tiny'}
    kinds = ai.groupby('generator')['conditioning'].first()
    assert kinds['sd-variations'] == 'card-bicubic-32' and kinds['vae-roundtrip'] == 'image-fit'
    knobs = ai.set_index('generator')
    assert (knobs.loc['sd15-img2img', 'strength'] == 0.8).all() and (knobs.loc['sd21-unclip', 'noise_level'] == 0).all()
    assert knobs.loc['vae-roundtrip', 'steps'].isna().all() and (knobs.loc['kandinsky22', 'steps'] == 2).all()


def test_audit_finds_no_metadata_shortcut_for_any_generator(zoo_dataset):
    from aidetect.audit import audit
    res = audit(zoo_dataset[1], bootstrap=200)
    t = res.table.set_index('generator')
    assert set(t.index) == {'all', *FIVE}
    assert ((t.auc - 0.5).abs() <= 0.1).all(), t[['n_real', 'n_ai', 'auc', 'verdict']]   # two-sided: below 0.4 is a shortcut too


def test_one_dataset_per_generator(zoo_dataset, tmp_path):
    out = tmp_path / 'by'
    p = run_cli('aidetect-gen', 'per-generator', zoo_dataset[1], '--out', out, check=0)
    assert sorted(d.name for d in out.iterdir()) == sorted(FIVE) and 'kandinsky22' in p.stdout
    for g in FIVE:
        m = read_manifest(out / g)
        assert (m.label == 'real').sum() == (m.label == 'ai').sum() == 8 and set(m.loc[m.label == 'ai', 'generator']) == {g}
        for f, sha in zip(m.path, m.sha256): assert (out / g / f).is_file()


def test_a_rerun_loads_no_finished_generator(zoo_dataset):
    src, out, _ = zoo_dataset
    before = (out / 'manifest.csv').read_bytes()
    p = run_cli('aidetect-gen', 'variations', src, '--out', out, '--generator', ','.join(FIVE), '--model', 'tiny',
                '--steps', '2', '--quiet', check=0)
    assert '0 variations made, 40 already done' in p.stderr and ' on cpu' not in p.stderr, p.stderr   # no model loaded
    assert (out / 'manifest.csv').read_bytes() == before


def test_generators_lists_the_zoo(capsys):
    from aidetect.gen.cli import main
    assert not main(['generators'])
    out = capsys.readouterr().out
    for e in ZOO.values():
        assert e.name in out and e.licence in out and f'{e.native} px' in out and e.kind in out
        for i, rev in e.repos.values(): assert f'{i} @ {rev}' in out


def test_unknown_or_unavailable_generators_are_one_clear_line(tmp_path):
    from aidetect.core import AidetectError
    from aidetect.gen.zoo.load import lazy_generators
    src = tmp_path / 'src'; src.mkdir(); noise_image().save(src / 'a.jpg')
    p = run_cli('aidetect-gen', 'variations', src, '--out', tmp_path / 'o', '--generator', 'sd-variations,midjourney')
    assert p.returncode == 2 and 'Traceback' not in p.stderr and not (tmp_path / 'o').exists()
    assert "unknown generator 'midjourney'; known generators: sd-variations, sd21-unclip, kandinsky22" in p.stderr
    for name, ids in [('kandinsky22', ['kandinsky-community/kandinsky-2-2-prior']), ('flux-redux', ['black-forest-labs/FLUX.1-Redux-dev'])]:
        p = run_cli('aidetect-gen', 'variations', src, '--out', tmp_path / name, '--generator', name, '--device', 'cpu',
                    env={'HF_HUB_OFFLINE': '1'})
        assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
        assert all(i in p.stderr for i in ids) and f'--model ./{name}' in p.stderr and '--model tiny' in p.stderr
    assert 'gated' in p.stderr
    with pytest.raises(AidetectError, match='--model is a preset'): lazy_generators('kandinsky22,vae-roundtrip', str(tmp_path))
    with pytest.raises(AidetectError, match='prior/ and decoder/'): load_generator('kandinsky22', str(tmp_path))


# --- crash safety -----------------------------------------------------------------------------------------------

def _files(d: Path) -> dict: return dataset_files(d)


@pytest.mark.slow
def test_several_generators_killed_at_random_moments_lose_and_duplicate_nothing(tmp_path):
    src = tmp_path / 'photos'
    for i in range(6):
        (src / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        noise_image(64, 48 if i % 3 else 64, seed=200 + i).save(src / f'c{i % 2}' / f'{i}.jpg', quality=85)
    gens = 'sd-variations,kandinsky22,vae-roundtrip'
    cmd = lambda out: [str(BIN / 'aidetect-gen'), 'variations', str(src), '--out', str(out), '--generator', gens,
                       '--model', 'tiny', '--steps', '2', '--batch-size', '3', '-q']
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    subprocess.run(cmd(whole), check=True, capture_output=True)
    total = len(read_manifest(whole))
    assert total == 6 * 4
    rng = np.random.default_rng(18)
    kills = 0
    for rows in sorted(rng.choice(np.arange(2, total - 2), 3, replace=False)):   # random points across the generators
        p = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            f = killed / 'manifest.csv'
            if f.exists() and len(f.read_text().splitlines()) - 1 > rows:
                time.sleep(rng.uniform(0, 0.3))   # and a random moment after it
                p.send_signal(signal.SIGKILL); break
            time.sleep(0.01)
        kills += p.wait(60) == -signal.SIGKILL
    assert kills >= 2, kills
    r = subprocess.run(cmd(killed), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = read_manifest(killed)
    assert len(m) == total and not m.path.duplicated().any()
    assert _files(killed) == _files(whole)               # same files, same bytes, same manifest
    assert not any(p.name.endswith('.tmp') for p in killed.rglob('*'))
