"""GPU generation cost: achieved TFLOP/s of `aidetect-gen`'s pipeline ÷ the GPU's dense fp16/bf16 peak.

The `full-random` preset is the real Stable Diffusion image-variation model's architecture with random weights, so
it costs what the real model costs. The bench counts the UNet's FLOPs for one denoising step (both halves of
classifier-free guidance) with `torch.utils.flop_counter.FlopCounterMode`, times whole pipeline calls (image
encoder, `--steps` UNet steps, VAE decoder, safety checker) on batches of `--batch` images, and prints

    achieved TFLOP/s = UNet FLOPs of the run / wall time of the run,  and that ÷ the GPU's dense fp16/bf16 peak

(so everything that is not the UNet counts as overhead). The peak comes from a table of common GPUs (vendor
datasheets, dense tensor-core fp16/bf16, no sparsity); `--peak-tflops` overrides it. Without a CUDA GPU it says that
it skipped.

    python bench/bench_gen_gpu.py [--size 512] [--batch 8] [--steps 25] [--dtype fp16] [--repeats 3]
                                  [--no-sdpa] [--vae-slicing] [--vae-tiling] [--peak-tflops 989]
    python bench/bench_gen_gpu.py --preset tiny --device cpu --dtype fp32 --size 64 --steps 2 --peak-tflops 1   # the code path, anywhere
"""
import argparse, statistics, sys, time

# Dense (no sparsity) fp16/bf16 tensor-core peaks in TFLOP/s, from the vendors' datasheets; matched in this order
# against torch.cuda.get_device_name(), so more specific names come first.
PEAK_TFLOPS = [('H200', 989.0), ('H100 NVL', 835.0), ('H100 PCIe', 756.0), ('H100', 989.0), ('GH200', 989.0),
               ('B200', 2250.0), ('B100', 1750.0), ('A100', 312.0), ('A800', 312.0), ('A40', 149.7), ('A30', 165.0),
               ('A10G', 70.0), ('A10', 125.0), ('L40S', 362.0), ('L40', 181.0), ('L4', 121.0), ('T4', 65.0),
               ('V100', 125.0), ('RTX 6000 Ada', 364.0), ('RTX A6000', 154.8), ('RTX 5090', 209.5),
               ('RTX 4090', 165.2), ('RTX 4080', 97.5), ('RTX 3090', 71.0), ('RTX 3080', 59.5)]


def peak_for(name: str):
    return next((p for k, p in PEAK_TFLOPS if k.lower() in name.lower()), None)


def unet_flops_per_step(pipe, batch: int, size: int) -> int:
    "FLOPs of one UNet call on a `batch` of latents for `size` px images, both halves of guidance included."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    unet, dev, dt = pipe.unet, pipe.device, pipe.unet.dtype
    lat = size // pipe.vae_scale_factor
    x = torch.randn(2 * batch, unet.config.in_channels, lat, lat, device=dev, dtype=dt)
    cond = torch.randn(2 * batch, 1, unet.config.cross_attention_dim, device=dev, dtype=dt)   # image embeddings
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(x, torch.tensor(500, device=dev), encoder_hidden_states=cond)
    return fc.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--preset', default='full-random'); ap.add_argument('--device', default='cuda')
    ap.add_argument('--size', type=int, default=512); ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=25); ap.add_argument('--dtype', default='fp16')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--no-sdpa', action='store_true', help="diffusers' classic attention instead of PyTorch SDPA")
    ap.add_argument('--vae-slicing', action='store_true', help='decode the batch one image at a time')
    ap.add_argument('--vae-tiling', action='store_true', help='decode in overlapping tiles (large sizes)')
    ap.add_argument('--no-safety', action='store_true', help='without the safety checker')
    ap.add_argument('--peak-tflops', type=float, default=None, help="the GPU's dense fp16/bf16 peak (default: table)")
    a = ap.parse_args()
    import torch
    if a.device.startswith('cuda') and not torch.cuda.is_available():
        print('bench_gen_gpu: skipped: no CUDA GPU on this machine (torch.cuda.is_available() is False)')
        return 0
    from PIL import Image
    import numpy as np
    from aidetect.script import quiet_libs
    from aidetect.gen.pipeline import load_pipeline
    quiet_libs('bench_gen_gpu')
    pipe = load_pipeline(a.preset, device=a.device, dtype=a.dtype, safety_checker=not a.no_safety)
    if a.no_sdpa:
        from diffusers.models.attention_processor import AttnProcessor
        pipe.unet.set_attn_processor(AttnProcessor())
    if a.vae_slicing: pipe.vae.enable_slicing()
    if a.vae_tiling: pipe.vae.enable_tiling()
    name = torch.cuda.get_device_name() if a.device.startswith('cuda') else a.device
    peak = a.peak_tflops or peak_for(name)
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (a.size, a.size, 3), dtype=np.uint8)) for _ in range(a.batch)]
    sync = torch.cuda.synchronize if a.device.startswith('cuda') else (lambda: None)

    def run(steps):
        gens = [torch.Generator('cpu').manual_seed(i) for i in range(a.batch)]
        sync(); t = time.perf_counter()
        pipe(images, height=a.size, width=a.size, num_inference_steps=steps, guidance_scale=3.0, generator=gens)
        sync(); return time.perf_counter() - t

    flops_step = unet_flops_per_step(pipe, a.batch, a.size)
    run(2)                                                       # warm-up: kernels, allocator, autotuning
    secs = statistics.median(run(a.steps) for _ in range(a.repeats))
    flops_run = flops_step * a.steps
    achieved = flops_run / secs / 1e12
    print(f'{a.preset} on {name}, {a.dtype}, {a.size} px, batch {a.batch}, {a.steps} steps, '
          f'attention {"classic" if a.no_sdpa else "SDPA"}, VAE slicing {a.vae_slicing}, tiling {a.vae_tiling}')
    print(f'  UNet: {flops_step / a.batch / 1e9:,.1f} GFLOP per image per step (guidance included), '
          f'{flops_run / a.batch / 1e12:,.3f} TFLOP per image per run')
    print(f'  run: {secs:.2f} s per batch of {a.batch} ({secs / a.batch:.3f} s per image), '
          f'achieved {achieved:.3g} TFLOP/s (UNet FLOPs ÷ whole-run time)')
    if peak: print(f'  peak {peak:.0f} TFLOP/s dense fp16/bf16 ({"--peak-tflops" if a.peak_tflops else "table"}): '
                   f'achieved ÷ peak = {achieved / peak:.1%}')
    else: print(f'  no peak known for {name!r}: pass --peak-tflops for the ratio')


if __name__ == '__main__':
    sys.exit(main())
