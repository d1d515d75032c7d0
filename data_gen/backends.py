"""Workers: backends that turn a batch of source images into variations (Stable Diffusion, OpenAI DALL·E 2)."""
from __future__ import annotations
from dataclasses import dataclass

import numpy as np

from aidetect.core import AidetectError
from .pipeline import DEFAULT_MODEL, DEFAULT_REVISION, PRESETS, load_pipeline

__all__ = ['Variation', 'SDBackend', 'OpenAIBackend', 'RateLimiter', 'is_blackout', 'generation_size']


@dataclass
class Variation:
    "One generated image and whether the backend's safety filter flagged it."
    image: object
    flagged: bool = False


def is_blackout(im, tol: int = 0) -> bool:
    "True when `im` is (all but) black: what the SD safety checker puts in place of a flagged image."
    return int(np.asarray(im.convert('L')).max()) <= tol


def generation_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    "(w, h) to generate at: the source's aspect ratio with its long side `size`, both multiples of `multiple`."
    if width >= height: w, h = size, size * height / width
    else: w, h = size * width / height, size
    snap = lambda v: max(multiple, int(round(v / multiple)) * multiple)
    return snap(w), snap(h)


class SDBackend:
    "Stable Diffusion image variations through diffusers' `StableDiffusionImageVariationPipeline`."
    backend, seeded = 'sd', True

    def __init__(self, model=DEFAULT_MODEL, revision=DEFAULT_REVISION, steps=25, guidance=3.0, scheduler='dpm++',
                 device=None, dtype=None, pipe=None, generator=None, safety_checker=True):
        self.model, self.steps, self.guidance = model, steps, guidance
        self.revision = revision if model not in PRESETS and not _is_dir(model) else ''
        self.pipe = pipe if pipe is not None else load_pipeline(model, revision, device, dtype, scheduler, safety_checker)
        self.scheduler = type(self.pipe.scheduler).__name__
        self.generator = generator or ('tiny' if model == 'tiny' else 'sd-image-variations')
        self.device = self.pipe.device

    @property
    def default_size(self) -> int:
        "The resolution the UNet was made for (512 px for the real model)."
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        "Generation sizes are rounded to this (latents must pass the UNet's downsamplings evenly)."
        return int(self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1))

    def dims_for(self, width: int, height: int, size: int) -> tuple[int, int]:
        "Generation size for a `width`x`height` source: its aspect ratio, long side `size`."
        return generation_size(width, height, size, self.size_multiple)

    def describe(self) -> dict:
        "How this backend makes images, in manifest columns."
        return dict(generator=self.generator, model=self.model, revision=self.revision, steps=self.steps,
                    guidance=self.guidance, scheduler=self.scheduler)

    def prepare(self, image):
        "CLIP pixel values for `image` (runs in reader threads, off the GPU's critical path)."
        return self.pipe.feature_extractor(images=image, return_tensors='pt').pixel_values[0]

    def generate(self, conds: list, seeds: list[int], width: int, height: int) -> list[Variation]:
        "One variation per prepared image in `conds`, each from its own seed, at `width`x`height`."
        import torch
        gens = [torch.Generator('cpu').manual_seed(int(s)) for s in seeds]  # CPU generators: same noise on any device
        out = self.pipe(torch.stack(conds), height=height, width=width, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, generator=gens)
        flags = out.nsfw_content_detected or [False] * len(out.images)
        return [Variation(im, bool(f) or is_blackout(im)) for im, f in zip(out.images, flags)]


def _is_dir(model) -> bool:
    from pathlib import Path
    return Path(str(model)).expanduser().is_dir()


class RateLimiter:
    "At most `per_minute` calls a minute, spaced evenly (None: no limit)."
    def __init__(self, per_minute: float | None = None):
        self.gap, self.next = (60.0 / per_minute if per_minute else 0.0), 0.0

    def wait(self):
        import time
        now = time.monotonic()
        if now < self.next: time.sleep(self.next - now)
        self.next = max(now, self.next) + self.gap


class OpenAIBackend:
    "DALL·E 2 image variations through the official `openai` client (retries with backoff on 429/5xx)."
    backend, seeded, SIZES = 'openai', False, (256, 512, 1024)

    def __init__(self, model='dall-e-2', api_key=None, base_url=None, max_retries=5, per_minute=None, timeout=120.0,
                 generator=None, client=None):
        import os
        self.model, self.generator = model, generator or model
        self.limiter = RateLimiter(per_minute)
        if client is None:
            import openai
            key = api_key or os.environ.get('OPENAI_API_KEY')
            if not key: raise AidetectError('--backend openai needs an API key: set OPENAI_API_KEY')
            client = openai.OpenAI(api_key=key, base_url=base_url or os.environ.get('OPENAI_BASE_URL'),
                                   max_retries=max_retries, timeout=timeout)
        self.client = client
        self.device = f'OpenAI API at {client.base_url}'
        self.revision = ''

    default_size = 512

    def dims_for(self, width: int, height: int, size: int) -> tuple[int, int]:
        "DALL·E 2 makes squares of 256, 512 or 1024 px."
        if size not in self.SIZES: raise AidetectError(f'--size must be one of {self.SIZES} for DALL·E 2, got {size}')
        return size, size

    def describe(self) -> dict:
        return dict(generator=self.generator, model=self.model, revision='', steps='', guidance='', scheduler='')

    def prepare(self, image):
        "The centre square of `image` (the endpoint takes square PNGs)."
        s = min(image.size)
        l, t = (image.width - s) // 2, (image.height - s) // 2
        return image.crop((l, t, l + s, t + s))

    def generate(self, conds: list, seeds: list, width: int, height: int) -> list[Variation]:
        "One variation per image, one request each (the API takes no seed; `seeds` are not used)."
        import base64, io
        import openai
        from PIL import Image
        out = []
        for im in conds:
            buf = io.BytesIO(); im.resize((width, height), Image.LANCZOS).save(buf, 'PNG')
            self.limiter.wait()
            try:
                r = self.client.images.create_variation(image=('image.png', buf.getvalue(), 'image/png'), model=self.model,
                                                        n=1, size=f'{width}x{height}', response_format='b64_json')
            except openai.AuthenticationError as e: raise AidetectError(f'OpenAI refused the API key ({e.message})') from None
            except openai.BadRequestError as e:   # e.g. the safety system refused the image: treat like a blackout
                out.append(Variation(None, True)); continue
            except (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError) as e:
                raise AidetectError(f'the OpenAI API kept failing after retries ({type(e).__name__}); finished images are '
                                    'kept: rerun the same command later, or lower --requests-per-minute') from None
            img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).convert('RGB')
            out.append(Variation(img, is_blackout(img)))
        return out
