"""`aidetect-gen`: make AI counterparts of real photos (image variations) as aidetect datasets."""
from __future__ import annotations
import argparse, os, sys

from aidetect.core import AidetectError
from aidetect.cli import arg_range

__all__ = ['main', 'build_parser']

EPILOG = """examples:
  aidetect-gen fetch --list                                             # the dataset registry
  aidetect-gen fetch weather --to photos/                               # Kaggle API (or --archive weather.zip)
  aidetect-gen variations photos/weather --out data/weather-sd          # Stable Diffusion v2.0, GPU, fp16
  aidetect-gen variations photos/weather --out data/weather-tiny --model tiny   # offline, random weights
  aidetect-gen variations photos/weather --out data/weather-dalle2 --backend openai --size 512
  accelerate launch -m data_gen variations photos/weather --out data/weather-sd # one process per GPU
  aidetect-gen import dalle-downloads/ --real photos/weather --out data/weather-dalle2 --generator dall-e-2

Rerun the same command after a crash or Ctrl-C: finished images are verified and skipped."""


_positive_int, _nonneg_int = arg_range(int, 1), arg_range(int, 0)


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import DEFAULT_MODEL, DEFAULT_REVISION, DEFAULT_GUIDANCE, SCHEDULERS
    p = argparse.ArgumentParser(prog='aidetect-gen', description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    f = sub.add_parser('fetch', help='get a registered real-image dataset (Kaggle API, or a downloaded zip)',
                       description='Download a registered dataset with the Kaggle API (credentials the usual Kaggle way: '
                       '`kaggle auth login`, ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY) or take a zip you '
                       'downloaded (--archive), and lay it out as DIR/NAME/<category>/<image>. Datasets that already '
                       'hold AI images (genimage-tiny, cifake) become aidetect datasets with a manifest.csv.',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument('name', nargs='?', metavar='NAME', help='registered dataset name (see --list)')
    f.add_argument('--to', metavar='DIR', help='folder to put the dataset in (as DIR/NAME)')
    f.add_argument('--archive', metavar='FILE', default=None, help='an already downloaded zip of the dataset')
    f.add_argument('--list', action='store_true', help='show the registry and exit')
    f.add_argument('--keep-archive', action='store_true', help='keep the downloaded zip in DIR/.downloads')
    i = sub.add_parser('import', help='make a dataset from variations made elsewhere (e.g. DALL·E 2 downloads)',
                       description='Pair each file in VARIANTS with the real image in --real that has the same file '
                       'name stem (x.png, x_1.png, x-v2.png ... pair with x.jpg) and write an aidetect dataset. Files '
                       'without a source are listed in rejected.csv with the reason.',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument('variants', metavar='VARIANTS', help='folder of generated images')
    i.add_argument('--real', required=True, metavar='SRC', help='folder of the real images they were made from')
    i.add_argument('--out', '-o', required=True, metavar='DST', help='dataset folder to write')
    i.add_argument('--generator', required=True, help='generator column and ai/ sub-folder, e.g. dall-e-2')
    i.add_argument('--model', default='', help='model column (default: empty)')
    i.add_argument('--domain', default=None, help="domain column (default: SRC's folder name)")
    i.add_argument('--keep-bytes', action='store_true',
                   help="copy variations untouched instead of saving them in their source's format and size")
    v = sub.add_parser('variations', help='make image variations of a folder of real photos',
                       description='Make image variations of every image under SRC and write an aidetect dataset to '
                       'DST: real/ (untouched copies), ai/<generator>/ (variations, saved like their sources), '
                       'manifest.csv (one row per image) and rejected.csv (unusable inputs, with reasons).',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    v.add_argument('src', metavar='SRC', help='folder of real images (category sub-folders become the category column)')
    v.add_argument('--out', '-o', metavar='DST', required=True, help='dataset folder to create or resume')
    m = v.add_argument_group('model')
    m.add_argument('--backend', choices=['sd', 'openai'], default='sd',
                   help='sd: Stable Diffusion image variations (diffusers); openai: DALL·E 2 variations API')
    m.add_argument('--model', default=DEFAULT_MODEL,
                   help="Hub id, local pipeline folder, or 'tiny' (random weights, offline; for checking the machinery)")
    m.add_argument('--revision', default=DEFAULT_REVISION, help='Hub revision (ignored for folders and presets)')
    m.add_argument('--steps', type=_positive_int, default=25, help='denoising steps')
    m.add_argument('--guidance', type=float, default=DEFAULT_GUIDANCE, help='classifier-free guidance scale')
    m.add_argument('--scheduler', default='dpm++', help=f"one of {', '.join(SCHEDULERS)}, or a diffusers scheduler class")
    m.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available; under accelerate, its device)')
    m.add_argument('--dtype', choices=['fp16', 'bf16', 'fp32'], default=None, help='default: fp16 on CUDA, fp32 on CPU')
    m.add_argument('--no-safety-checker', action='store_true', help='load the pipeline without its safety checker')
    oa = v.add_argument_group('openai backend (key from OPENAI_API_KEY)')
    oa.add_argument('--openai-model', default='dall-e-2', help='image model of the variations endpoint')
    oa.add_argument('--base-url', default=None, help='API base URL (default: OPENAI_BASE_URL or the official one)')
    oa.add_argument('--requests-per-minute', type=float, default=None, help='rate limit for API requests')
    oa.add_argument('--api-retries', type=_nonneg_int, default=5, help='retries with backoff on 429 and 5xx answers')
    o = v.add_argument_group('output')
    o.add_argument('--n-per-image', type=_positive_int, default=1, help='variations per source image')
    o.add_argument('--size', type=_positive_int, default=None, help="long side of generated images in px (default: the model's, 512)")
    o.add_argument('--batch-size', type=_positive_int, default=4, help='images per pipeline call')
    o.add_argument('--seed', type=int, default=0, help='base seed; each image seed derives from it, its path and variant index')
    o.add_argument('--limit', type=_positive_int, default=None, help='use only the first N sources (sorted)')
    o.add_argument('--per-category', type=_positive_int, default=None, help='use only the first N sources of each category')
    o.add_argument('--format', choices=['source', 'jpeg', 'png', 'webp'], default='source',
                   help="'source': each variation in its source's format and JPEG quality")
    o.add_argument('--no-match-size', action='store_true', help="keep the generated size instead of the source's")
    o.add_argument('--domain', default=None, help="domain column (default: SRC's folder name)")
    o.add_argument('--generator', default=None, help="generator column and ai/ sub-folder (default: sd-image-variations, or tiny)")
    o.add_argument('--max-retries', type=_nonneg_int, default=3, help='new seeds to try after a safety-checker blackout')
    o.add_argument('--quiet', '-q', action='store_true', help='no progress bar')
    return p


def _variations(a) -> int:
    from .backends import SDBackend, OpenAIBackend
    from .distributor import Distributor
    from .run import VariationJob, run_variations
    from .sources import scan_sources
    dist = Distributor()
    device = a.device or dist.device
    scan_sources(a.src)   # a missing SRC is reported before a model is loaded
    if a.backend == 'openai':
        backend = OpenAIBackend(a.openai_model, base_url=a.base_url, max_retries=a.api_retries,
                                per_minute=a.requests_per_minute, generator=a.generator)
        backend.dims_for(1, 1, a.size or backend.default_size)   # check --size now
    else:
        backend = SDBackend(a.model, a.revision, steps=a.steps, guidance=a.guidance, scheduler=a.scheduler,
                            device=device, dtype=a.dtype, generator=a.generator, safety_checker=not a.no_safety_checker)
    job = VariationJob(src=a.src, out=a.out, n_per_image=a.n_per_image, size=a.size, batch_size=a.batch_size,
                       seed=a.seed, limit=a.limit, per_category=a.per_category, format=a.format,
                       match_size=not a.no_match_size, domain=a.domain, max_retries=a.max_retries)
    if dist.is_main:
        how = f", {a.steps} steps, guidance {a.guidance}, {backend.scheduler}" if a.backend == 'sd' else ''
        print(f"aidetect-gen: {backend.generator} ({backend.model}{' @ ' + backend.revision if backend.revision else ''}) "
              f"on {backend.device}{how}", file=sys.stderr)
        if a.model == 'tiny':
            print('aidetect-gen: the tiny model has random weights: its images are noise, useful only to check the '
                  'machinery', file=sys.stderr)
    s = run_variations(job, backend, progress=False if a.quiet else None,
                       log=lambda m: print(m, file=sys.stderr))
    print(f'aidetect-gen{dist.tag}: {s}', file=sys.stderr)
    if dist.is_main and not s.interrupted:
        from aidetect.manifest import read_manifest, read_rejected
        m = read_manifest(a.out)
        print(f"aidetect-gen: dataset {a.out}: {(m.label == 'real').sum()} real and {(m.label == 'ai').sum()} AI images "
              f"in manifest.csv, {len(read_rejected(a.out))} rows in rejected.csv", file=sys.stderr)
    if s.interrupted: return 130
    if not (s.done or s.skipped or s.real):
        raise AidetectError(f'nothing usable in {a.src}: all {s.rejected} input(s) were rejected; reasons are in '
                            f'{os.path.join(a.out, "rejected.csv")}')
    return 0


def _fetch(a) -> int:
    from aidetect.datasets import fetch, registry_table
    if a.list:
        print(registry_table().to_string(index=False)); return 0
    if not a.name or not a.to: raise AidetectError('fetch needs NAME and --to DIR (or --list)')
    d = fetch(a.name, a.to, a.archive, a.keep_archive)
    print(f'aidetect-gen: {a.name} is in {d}', file=sys.stderr)
    return 0


def _import(a) -> int:
    from .importer import import_variants
    s = import_variants(a.variants, a.real, a.out, a.generator, a.model, a.domain, match_source=not a.keep_bytes)
    print(f'aidetect-gen: {s}\naidetect-gen: dataset in {a.out}', file=sys.stderr)
    if not s.paired: raise AidetectError(f'no variation in {a.variants} could be paired with an image in {a.real}; '
                                         f'see {os.path.join(a.out, "rejected.csv")}')
    return 0


def main(argv=None) -> int:
    "Entry point of `aidetect-gen`."
    p = build_parser()
    a = p.parse_args(argv)
    if a.command is None: p.print_help(); return 2
    from aidetect.cli import quiet_libs
    quiet_libs('aidetect-gen')
    try:
        rc = dict(variations=_variations, fetch=_fetch, **{'import': _import})[a.command](a)
    except AidetectError as e:
        print(f'aidetect-gen: error: {e}', file=sys.stderr); return 2
    except KeyboardInterrupt:
        print('aidetect-gen: interrupted', file=sys.stderr); return 130
    return rc


if __name__ == '__main__': sys.exit(main())
