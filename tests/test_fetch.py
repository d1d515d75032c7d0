"""The dataset registry: fixture zips shaped like the real downloads lay out with the right categories, generators,
groups and splits; the CLI explains itself offline."""
import io, zipfile
import pytest
from conftest import run_cli, noise_image
from aidetect.dataset import SPLITS_FILE, read_manifest, read_splits
from aidetect.gen.fetch import fetch, registry_table

GENS = {'imagenet_ai_0508_adm': 'adm', 'imagenet_ai_0419_biggan': 'biggan', 'imagenet_glide': 'glide',
        'imagenet_midjourney': 'midjourney', 'imagenet_ai_0424_sdv5': 'sdv5', 'imagenet_ai_0419_vqdm': 'vqdm',
        'imagenet_ai_0424_wukong': 'wukong'}


def _zip(path, names, same=()):
    "A zip of small images named `names` (PNG for .png names, else JPEG); names in `same` share their bytes."
    with zipfile.ZipFile(path, 'w') as z:
        for i, n in enumerate(names):
            b = io.BytesIO()
            noise_image(16, 12, seed=0 if n in same else i + 1).save(b, 'PNG' if n.lower().endswith('.png') else 'JPEG')
            z.writestr(n, b.getvalue())
        z.writestr('README.txt', 'about this dataset')
    return path


def _files(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file() and not p.name.startswith('.'))


def test_comic_books_title_below_the_split_is_the_category(tmp_path):
    names = ['comic books/train/batman/Batman 001 (2016)/01.jpg', 'comic books/train/batman/Batman 001 (2016)/02.jpg',
             'comic books/train/batman/Batman 002 (2016)/01.jpg', 'comic books/test/batman/Batman 050 (2018)/01.jpg',
             'comic books/train/superman/sm_001.jpg', 'comic books/test/superman/sm_001.jpg', '__MACOSX/comic books/._x.jpg']
    d = fetch('comic', tmp_path / 'photos', archive=_zip(tmp_path / 'comic.zip', names))
    assert _files(d) == ['batman/test/Batman 050 (2018)/01.jpg', 'batman/train/Batman 001 (2016)/01.jpg',
                         'batman/train/Batman 001 (2016)/02.jpg', 'batman/train/Batman 002 (2016)/01.jpg',
                         'superman/test/sm_001.jpg', 'superman/train/sm_001.jpg']
    splits = read_splits(d)
    assert splits['superman/test/sm_001.jpg'] == 'test' and list(splits.values()).count('train') == 4


def test_variations_of_a_split_photo_folder_carry_the_split(tmp_path, tiny_backend):
    from aidetect.gen.run import VariationJob, run_variations
    names = ['comic books/train/batman/a/01.jpg', 'comic books/test/batman/b/01.jpg', 'comic books/train/superman/1.jpg']
    d = fetch('comic', tmp_path / 'photos', archive=_zip(tmp_path / 'comic.zip', names))
    run_variations(VariationJob(src=str(d), out=str(tmp_path / 'ds')), tiny_backend, progress=False, log=lambda m: None)
    m = read_manifest(tmp_path / 'ds')
    assert set(m.category) == {'batman', 'superman'}                    # titles, never issue folders
    assert dict(zip(m.path, m.split))['real/batman/test/b/01.jpg'] == 'test'
    assert (m.groupby('group').split.nunique() == 1).all() and set(m.split) == {'train', 'test'}


def test_tiny_genimage_seven_generators_upper_case_one_group_per_photo(tmp_path):
    names = []
    for raw in GENS:
        for split in ('train', 'val'):
            names += [f'{raw}/{split}/ai/001_{GENS[raw]}_{split}.{"PNG" if raw.endswith("adm") else "png"}']
        names += [f'{raw}/train/nature/n01440764_10026.JPEG']            # the same ImageNet photo under every generator
    names += ['imagenet_glide/val/nature/ILSVRC2012_val_00000091.JPEG']
    d = fetch('genimage-tiny', tmp_path / 'data', archive=_zip(tmp_path / 'g.zip', names, same={n for n in names if 'n01440764' in n}))
    m = read_manifest(d)
    ai = m[m.label == 'ai']
    assert sorted(set(ai.generator)) == sorted(GENS.values()) and len(ai) == 14
    real = m[m.label == 'real']
    assert sorted(real.path) == ['real/train/n01440764_10026.JPEG', 'real/val/ILSVRC2012_val_00000091.JPEG']   # stored once
    assert set(real.group) == {'n01440764_10026', 'ILSVRC2012_val_00000091'} and set(m.split) == {'train', 'val'}
    assert dict(zip(m.path, m.split))['ai/adm/val/001_adm_val.PNG'] == 'val'
    again = fetch('genimage-tiny', tmp_path / 'data', archive=tmp_path / 'g.zip')   # a rerun adds nothing
    assert read_manifest(again).equals(m)


def test_cifake_keeps_its_official_split(tmp_path):
    names = ['train/REAL/0001.jpg', 'train/FAKE/0001.jpg', 'test/REAL/0000 (10).jpg', 'test/FAKE/1000 (2).jpg']
    m = read_manifest(fetch('cifake', tmp_path / 'data', archive=_zip(tmp_path / 'c.zip', names)))
    assert dict(zip(m.path, m.split)) == {'real/train/0001.jpg': 'train', 'ai/stable-diffusion-v1-4/train/0001.jpg': 'train',
                                          'real/test/0000 (10).jpg': 'test', 'ai/stable-diffusion-v1-4/test/1000 (2).jpg': 'test'}
    assert m.group.nunique() == 4


def test_synthbuster_generators_and_raise_photos_grouped_by_name(tmp_path):
    names = [f'synthbuster/{g}/r000da54ft.png' for g in ('dalle2', 'dalle3', 'midjourney-v5', 'stable-diffusion-xl')]
    names += ['synthbuster/dalle2/r0a2e85f0t.png', 'synthbuster/real_RAISE_1k/r000da54ft.png', 'synthbuster/prompts.csv']
    m = read_manifest(fetch('synthbuster', tmp_path / 'data', archive=_zip(tmp_path / 's.zip', names)))
    assert set(m.loc[m.label == 'ai', 'generator']) == {'dalle2', 'dalle3', 'midjourney-v5', 'stable-diffusion-xl'}
    assert (m.group == 'r000da54ft').sum() == 5 and (m.label == 'real').sum() == 1


@pytest.mark.parametrize('name,names,expected', [
    ('indoor', ['indoorCVPR_09/Images/airport_inside/airport_inside_0001.jpg', 'indoorCVPR_09/Images/bar/bar_0001.jpg',
                'indoorCVPR_09annotations/Annotations/bar/x.jpg'], ['airport_inside/airport_inside_0001.jpg', 'bar/bar_0001.jpg']),
    ('weather', ['dataset/dew/2208.jpg', 'dataset/fogsmog/4075.jpg'], ['dew/2208.jpg', 'fogsmog/4075.jpg'])])
def test_real_datasets_lay_out_by_category(tmp_path, name, names, expected):
    assert _files(fetch(name, tmp_path / 'photos', archive=_zip(tmp_path / f'{name}.zip', names))) == expected


def test_indoor_split_lists_become_the_official_split(tmp_path):
    z = _zip(tmp_path / 'indoor.zip', ['indoorCVPR_09/Images/bar/bar_0001.jpg', 'indoorCVPR_09/Images/bar/bar_0002.jpg'])
    with zipfile.ZipFile(z, 'a') as zf:
        zf.writestr('TrainImages.txt', 'bar/bar_0001.jpg\n'); zf.writestr('TestImages.txt', 'bar/bar_0002.jpg\n')
    d = fetch('indoor', tmp_path / 'photos', archive=z)
    assert read_splits(d) == {'bar/bar_0001.jpg': 'train', 'bar/bar_0002.jpg': 'test'} and (d / SPLITS_FILE).exists()


def test_fetch_cli_lists_licences_and_explains_itself(tmp_path):
    p = run_cli('aidetect-gen', 'fetch', '--list', check=0)
    for n, lic in zip(registry_table().name, registry_table().licence): assert n in p.stdout and lic[:12] in p.stdout
    z = _zip(tmp_path / 'weather.zip', ['dataset/dew/2208.jpg'])
    p = run_cli('aidetect-gen', 'fetch', 'weather', '--to', tmp_path / 'photos', '--archive', z, check=0)
    assert (tmp_path / 'photos' / 'weather' / 'dew' / '2208.jpg').exists() and 'CC0' in p.stderr
    p = run_cli('aidetect-gen', 'fetch', 'weather', '--to', tmp_path / 'p2', env={'HOME': str(tmp_path), 'KAGGLE_CONFIG_DIR': str(tmp_path)})
    assert p.returncode == 2 and 'Kaggle credentials' in p.stderr and '--archive' in p.stderr and 'Traceback' not in p.stderr
    p = run_cli('aidetect-gen', 'fetch', 'synthbuster', '--to', tmp_path)
    assert p.returncode == 2 and 'zenodo' in p.stderr and '--archive' in p.stderr
    p = run_cli('aidetect-gen', 'fetch', 'nope', '--to', tmp_path)
    assert p.returncode == 2 and 'indoor' in p.stderr
