"""`aidetect-gen`: make AI counterparts of real photos (image variations) as aidetect datasets."""
from __future__ import annotations
import argparse, os, sys

from aidetect.core import AidetectError

__all__ = ['main', 'build_parser']

EPILOG = """examples:
  aidetect-gen variations photos/ --out data/photos-sd                  # Stable Diffusion v2.0, GPU, fp16
  aidetect-gen variations photos/ --out data/photos-tiny --model tiny   # offline check, random weights
  accelerate launch -m data_gen variations photos/ --out data/photos-sd # one process per GPU

Rerun the same command after a crash or Ctrl-C: finished images are verified and skipped."""


def _positive_int(s):
    v = int(s)
    if v < 1: raise argparse.ArgumentTypeError(f'must be a positive integer, got {s}')
    return v


def _nonneg_int(s):
    v = int(s)
    if v < 0: raise argparse.ArgumentTypeError(f'must be 0 or more, got {s}')
    return v


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import DEFAULT_MODEL, DEFAULT_REVISION, DEFAULT_GUIDANCE, SCHEDULERS
    p = argparse.ArgumentParser(prog='aidetect-gen', description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    v = sub.add_parser('variations', help='make image variations of a folder of real photos',
                       description='Make image variations of every image under SRC and write an aidetect dataset to '
                       'DST: real/ (untouched copies), ai/<generator>/ (variations, saved like their sources), '
                       'manifest.csv (one row per image) and rejected.csv (unusable inputs, with reasons).',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    v.add_argument('src', metavar='SRC', help='folder of real images (category sub-folders become the category column)')
    v.add_argument('--out', '-o', metavar='DST', required=True, help='dataset folder to create or resume')
    m = v.add_argument_group('model')
    m.add_argument('--backend', choices=['sd'], default='sd', help='sd: Stable Diffusion image variations (diffusers)')
    m.add_argument('--model', default=DEFAULT_MODEL,
                   help="Hub id, local pipeline folder, or 'tiny' (random weights, offline; for checking the machinery)")
    m.add_argument('--revision', default=DEFAULT_REVISION, help='Hub revision (ignored for folders and presets)')
    m.add_argument('--steps', type=_positive_int, default=25, help='denoising steps')
    m.add_argument('--guidance', type=float, default=DEFAULT_GUIDANCE, help='classifier-free guidance scale')
    m.add_argument('--scheduler', default='dpm++', help=f"one of {', '.join(SCHEDULERS)}, or a diffusers scheduler class")
    m.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available; under accelerate, its device)')
    m.add_argument('--dtype', choices=['fp16', 'bf16', 'fp32'], default=None, help='default: fp16 on CUDA, fp32 on CPU')
    m.add_argument('--no-safety-checker', action='store_true', help='load the pipeline without its safety checker')
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
    from .backends import SDBackend
    from .distributor import Distributor
    from .run import VariationJob, run_variations
    dist = Distributor()
    device = a.device or dist.device
    backend = SDBackend(a.model, a.revision, steps=a.steps, guidance=a.guidance, scheduler=a.scheduler, device=device,
                        dtype=a.dtype, generator=a.generator, safety_checker=not a.no_safety_checker)
    job = VariationJob(src=a.src, out=a.out, n_per_image=a.n_per_image, size=a.size, batch_size=a.batch_size,
                       seed=a.seed, limit=a.limit, per_category=a.per_category, format=a.format,
                       match_size=not a.no_match_size, domain=a.domain, max_retries=a.max_retries)
    if dist.is_main:
        print(f"aidetect-gen: {backend.generator} ({backend.model}{' @ ' + backend.revision if backend.revision else ''}) "
              f"on {backend.device}, {a.steps} steps, guidance {a.guidance}, {backend.scheduler}", file=sys.stderr)
        if a.model == 'tiny':
            print('aidetect-gen: the tiny model has random weights: its images are noise, useful only to check the '
                  'machinery', file=sys.stderr)
    s = run_variations(job, backend, progress=False if a.quiet else None,
                       log=lambda m: print(m, file=sys.stderr))
    if dist.is_main: print(f'aidetect-gen: {s}\naidetect-gen: dataset in {a.out} (manifest.csv, rejected.csv)', file=sys.stderr)
    if s.interrupted: return 130
    if not (s.done or s.skipped or s.real):
        raise AidetectError(f'nothing usable in {a.src}: all {s.rejected} input(s) were rejected; reasons are in '
                            f'{os.path.join(a.out, "rejected.csv")}')
    return 0


def main(argv=None) -> int:
    "Entry point of `aidetect-gen`."
    p = build_parser()
    a = p.parse_args(argv)
    if a.command is None: p.print_help(); return 2
    try:
        if a.command == 'variations': rc = _variations(a)
        else: p.error(f'unknown command {a.command}')
    except AidetectError as e:
        print(f'aidetect-gen: error: {e}', file=sys.stderr); return 2
    except KeyboardInterrupt:
        print('aidetect-gen: interrupted', file=sys.stderr); return 130
    return rc


if __name__ == '__main__': sys.exit(main())
