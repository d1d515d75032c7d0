"""Workers: backends that turn a batch of source images into variations (Stable Diffusion, OpenAI DALL·E 2)."""
from __future__ import annotations
from dataclasses import dataclass

import numpy as np

from aidetect.core import AidetectError
from .pipeline import DEFAULT_MODEL, DEFAULT_REVISION, PRESETS, load_pipeline

__all__ = ['Variation', 'SDBackend', 'is_blackout', 'generation_size']


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
    backend = 'sd'

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
