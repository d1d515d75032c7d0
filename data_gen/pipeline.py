"""Loading Stable Diffusion image-variation pipelines: hub ids, local folders, and random-weight presets."""
from __future__ import annotations
import shutil, tempfile
from pathlib import Path

from aidetect.core import AidetectError, cache_dir

__all__ = ['DEFAULT_MODEL', 'DEFAULT_REVISION', 'DEFAULT_GUIDANCE', 'PRESETS', 'SCHEDULERS', 'ModelUnavailable',
           'build_random_pipeline', 'preset_dir', 'load_pipeline', 'set_scheduler', 'resolve_device', 'resolve_dtype']

DEFAULT_MODEL = 'lambdalabs/sd-image-variations-diffusers'
DEFAULT_REVISION = 'v2.0'
DEFAULT_GUIDANCE = 3.0   # the model card's value

# Bump when a preset's config changes, so stale cached copies are rebuilt rather than reused.
PRESET_VERSION = 1

# Sizes of the component configs. `tiny` keeps every component class of the real pipeline but is small enough to
# run in tests on a CPU; `full` matches the real model's architecture (so random weights cost what the real ones do).
_SIZES = dict(
    tiny=dict(unet_channels=(32, 64), unet_layers=1, unet_heads=8, unet_groups=8, sample_size=16,
              vae_channels=(16, 32, 32), vae_layers=1, vae_groups=8, clip_hidden=32, clip_layers=2, clip_heads=4,
              clip_inter=37, clip_proj=32, clip_image=32, clip_patch=4),
    full=dict(unet_channels=(320, 640, 1280, 1280), unet_layers=2, unet_heads=8, unet_groups=32, sample_size=64,
              vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32, clip_hidden=1024, clip_layers=24,
              clip_heads=16, clip_inter=4096, clip_proj=768, clip_image=224, clip_patch=14),
)
PRESETS = {'tiny': 'tiny', 'full-random': 'full'}

SCHEDULERS = {
    'dpm++': ('DPMSolverMultistepScheduler', dict(algorithm_type='dpmsolver++')),
    'ddim': ('DDIMScheduler', {}), 'pndm': ('PNDMScheduler', {}), 'euler': ('EulerDiscreteScheduler', {}),
    'euler-a': ('EulerAncestralDiscreteScheduler', {}), 'unipc': ('UniPCMultistepScheduler', {}),
    'lms': ('LMSDiscreteScheduler', {}), 'heun': ('HeunDiscreteScheduler', {}),
}


class ModelUnavailable(AidetectError):
    "The image-variation model could not be loaded (not cached and not reachable, or not a pipeline folder)."


def build_random_pipeline(size: str = 'tiny', seed: int = 0):
    "A `StableDiffusionImageVariationPipeline` of the given size ('tiny' or 'full') with random weights."
    import torch
    from diffusers import (StableDiffusionImageVariationPipeline, UNet2DConditionModel, AutoencoderKL,
                           PNDMScheduler)
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
    s = _SIZES[size]
    torch.manual_seed(seed)
    n = len(s['unet_channels'])
    unet = UNet2DConditionModel(
        sample_size=s['sample_size'], in_channels=4, out_channels=4, layers_per_block=s['unet_layers'],
        block_out_channels=s['unet_channels'], norm_num_groups=s['unet_groups'], attention_head_dim=s['unet_heads'],
        # the real model attends at every level but the lowest; tiny attends only at its lowest, which is cheaper
        down_block_types=(('CrossAttnDownBlock2D',) * (n - 1) + ('DownBlock2D',) if size == 'full'
                          else ('DownBlock2D',) + ('CrossAttnDownBlock2D',) * (n - 1)),
        up_block_types=(('UpBlock2D',) + ('CrossAttnUpBlock2D',) * (n - 1) if size == 'full'
                        else ('CrossAttnUpBlock2D',) * (n - 1) + ('UpBlock2D',)),
        cross_attention_dim=s['clip_proj'])
    nv = len(s['vae_channels'])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s['vae_channels'],
                        layers_per_block=s['vae_layers'], norm_num_groups=s['vae_groups'],
                        down_block_types=('DownEncoderBlock2D',) * nv, up_block_types=('UpDecoderBlock2D',) * nv,
                        sample_size=s['sample_size'] * 2 ** (nv - 1))
    vision = dict(hidden_size=s['clip_hidden'], projection_dim=s['clip_proj'], num_hidden_layers=s['clip_layers'],
                  num_attention_heads=s['clip_heads'], intermediate_size=s['clip_inter'],
                  image_size=s['clip_image'], patch_size=s['clip_patch'])
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    text = dict(hidden_size=s['clip_proj'], projection_dim=s['clip_proj'], num_hidden_layers=1,
                num_attention_heads=4, intermediate_size=37)
    safety_checker = StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, text_config=text,
                                                             projection_dim=s['clip_proj']))
    px = s['clip_image']
    feature_extractor = CLIPImageProcessor(size={'shortest_edge': px}, crop_size={'height': px, 'width': px},
                                           do_resize=True, do_center_crop=True, do_normalize=True)
    # The real repo ships a PNDM scheduler config with these betas; `set_scheduler` swaps in a faster solver.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
                              num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionImageVariationPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                                 safety_checker=safety_checker, feature_extractor=feature_extractor)


def preset_dir(name: str = 'tiny') -> Path:
    "Folder of random-weight preset `name`, built with `save_pretrained` on first use (cached)."
    if name not in PRESETS: raise AidetectError(f"unknown preset {name!r}; presets are {sorted(PRESETS)}")
    dest = cache_dir('models') / f'{name}-sd-image-variations-v{PRESET_VERSION}'
    if (dest / 'model_index.json').exists(): return dest
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', dir=dest.parent))
    try:
        build_random_pipeline(PRESETS[name]).save_pretrained(tmp)
        if dest.exists(): shutil.rmtree(dest)   # a half-built copy from a killed run
        tmp.rename(dest)
    except OSError:
        if not (dest / 'model_index.json').exists(): raise   # else another process finished it first
    finally:
        if tmp.exists(): shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_device(device: str | None = None) -> str:
    "`device`, or 'cuda' when a GPU is visible, else 'cpu'."
    import torch
    if device in (None, '', 'auto'): return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise AidetectError(f"--device {device} was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def resolve_dtype(dtype: str | None, device: str):
    "torch dtype for a dtype name ('fp16', 'bf16', 'fp32'); default fp16 on CUDA, fp32 elsewhere."
    import torch
    names = {'fp16': torch.float16, 'float16': torch.float16, 'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
             'fp32': torch.float32, 'float32': torch.float32}
    if dtype in (None, '', 'auto'): return torch.float16 if device.startswith('cuda') else torch.float32
    if dtype not in names: raise AidetectError(f"unknown dtype {dtype!r}; use one of fp16, bf16, fp32")
    return names[dtype]


def set_scheduler(pipe, name: str = 'dpm++'):
    "Swap `pipe`'s scheduler for `name` (a key of `SCHEDULERS` or a diffusers scheduler class name), same betas."
    import diffusers
    cls_name, kw = SCHEDULERS.get(name, (name, {}))
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith('Scheduler'):
        raise AidetectError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)} or a diffusers "
                            "scheduler class name such as DDIMScheduler")
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kw)
    return pipe


def _unavailable(model: str, revision: str | None, err: Exception) -> ModelUnavailable:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    rev = f' --revision {revision}' if revision else ''
    return ModelUnavailable(
        f"could not load the image-variation model {model!r}{f' (revision {revision})' if revision else ''}: "
        f"it is not in the local Hugging Face cache and the Hub could not be reached ({first}).\n"
        f"  To use it, download it once on a machine with internet:\n"
        f"      hf download {model}{rev} --local-dir sd-image-variations\n"
        f"  then pass the folder: --model ./sd-image-variations\n"
        f"  To check the machinery offline, use --model tiny (random weights: the images are noise).")


def load_pipeline(model: str = DEFAULT_MODEL, revision: str | None = DEFAULT_REVISION, device: str | None = None,
                  dtype: str | None = None, scheduler: str | None = 'dpm++', safety_checker: bool = True):
    "Load an image-variation pipeline from a preset name, a local folder or a Hub id, ready on `device`."
    import torch
    from diffusers import StableDiffusionImageVariationPipeline
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kw = dict(dtype=torch_dtype)
    if not safety_checker: kw.update(safety_checker=None, requires_safety_checker=False)
    if model in PRESETS: src, rev = preset_dir(model), None
    elif Path(model).expanduser().exists():
        src, rev = Path(model).expanduser(), None
        if not (src / 'model_index.json').exists():
            raise ModelUnavailable(f"{src} is not a diffusers pipeline folder (no model_index.json). Pass the "
                                   f"folder that `hf download {DEFAULT_MODEL} --local-dir DIR` made.")
    else: src, rev = model, revision
    try: pipe = StableDiffusionImageVariationPipeline.from_pretrained(src, revision=rev, **kw)
    except (OSError, ValueError) as e:
        if isinstance(src, Path): raise ModelUnavailable(f"could not load the pipeline in {src}: {e}") from e
        raise _unavailable(model, revision, e) from e
    if scheduler: set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
