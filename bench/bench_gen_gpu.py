"""GPU generation cost per generator: seconds per image and achieved TFLOP/s ÷ the GPU's dense fp16/bf16 peak.

The `full-random` preset of each generator (`aidetect-gen generators`) is its real architecture with random
weights, so it costs what the real model costs. For each generator of `--generator` the bench counts the FLOPs of
one whole generation call on a batch of `--batch` images (every model the call runs: encoders, the denoiser's
steps, the decoder, the safety checker) with `torch.utils.flop_counter.FlopCounterMode`, times the same call
without the counter (median of `--repeats`, after a warm-up call), and prints

    seconds per image,  achieved TFLOP/s = FLOPs of the call / its wall time,  and that ÷ the GPU's peak

(operations the counter does not know, e.g. some custom kernels, are not counted: the figure is a lower bound).
The peak comes from a table of common GPUs (vendor datasheets, dense tensor-core fp16/bf16, no sparsity);
`--peak-tflops` overrides it. Without a CUDA GPU it says that it skipped.

    python bench/bench_gen_gpu.py [--generator sd-variations,kandinsky22,...] [--size 512] [--batch 8]
                                  [--steps 25] [--dtype fp16] [--repeats 3] [--no-sdpa] [--vae-slicing] [--peak-tflops 989]
    python bench/bench_gen_gpu.py --generator sd-variations,vae-roundtrip --preset tiny --device cpu --dtype fp32 \
        --size 64 --steps 2 --batch 2 --repeats 1 --peak-tflops 1   # the code path, anywhere
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


def call_flops(fn) -> int:
    "FLOPs of everything `fn()` runs, as PyTorch's FLOP counter sees them."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc: fn()
    return fc.get_total_flops()


def bench_one(name, a, images, peak, sync):
    "Load generator `name` (`a.preset`), count and time one batch; print its lines."
    from aidetect.gen.zoo.load import load_generator
    b = load_generator(name, a.preset, device=a.device, dtype=a.dtype, steps=a.steps, safety_checker=not a.no_safety)
    pipe = getattr(b, 'pipe', None)
    if a.no_sdpa and hasattr(pipe, 'unet'):
        from diffusers.models.attention_processor import AttnProcessor
        pipe.unet.set_attn_processor(AttnProcessor())
    if a.vae_slicing and hasattr(pipe, 'vae'): pipe.vae.enable_slicing()
    if a.vae_tiling and hasattr(pipe, 'vae'): pipe.vae.enable_tiling()
    dims = b.generation_dims(a.size, a.size) if hasattr(b, 'generation_dims') else (a.size, a.size)
    conds = [b.prepare(im, dims) for im in images]
    seeds = list(range(len(images)))

    def run():
        sync(); t = time.perf_counter()
        b.generate(conds, seeds, *dims)
        sync(); return time.perf_counter() - t

    run()                                                        # warm-up: kernels, allocator, autotuning
    flops = call_flops(lambda: b.generate(conds, seeds, *dims))
    secs = statistics.median(run() for _ in range(a.repeats))
    achieved = flops / secs / 1e12
    steps = getattr(b, 'steps', None)
    print(f'{name} ({b.kind}, {a.preset}), {dims[0]}x{dims[1]} px, batch {a.batch}'
          + (f', {steps} steps' if steps else '') + f': {secs / a.batch:.3f} s per image, '
          f'{flops / a.batch / 1e9:,.2f} GFLOP per image, achieved {achieved:.3g} TFLOP/s'
          + (f' = {achieved / peak:.1%} of peak' if peak else ''))
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--generator', default='sd-variations', help='generators, comma-separated (aidetect-gen generators)')
    ap.add_argument('--preset', default='full-random'); ap.add_argument('--device', default='cuda')
    ap.add_argument('--size', type=int, default=512); ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=None, help="denoising steps (default: each generator's)")
    ap.add_argument('--dtype', default='fp16'); ap.add_argument('--repeats', type=int, default=3)
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
    from aidetect.gen.zoo.load import generator_names
    quiet_libs('bench_gen_gpu')
    names = generator_names(a.generator)
    name = torch.cuda.get_device_name() if a.device.startswith('cuda') else a.device
    peak = a.peak_tflops or peak_for(name)
    print(f'{name}, {a.dtype}, attention {"classic" if a.no_sdpa else "SDPA"}, VAE slicing {a.vae_slicing}, '
          f'tiling {a.vae_tiling}; peak ' + (f'{peak:.0f} TFLOP/s dense fp16/bf16 ({"--peak-tflops" if a.peak_tflops else "table"})'
                                             if peak else 'unknown: pass --peak-tflops for the ratio'))
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (a.size, a.size, 3), dtype=np.uint8)) for _ in range(a.batch)]
    sync = torch.cuda.synchronize if a.device.startswith('cuda') else (lambda: None)
    for n in names:
        b = bench_one(n, a, images, peak, sync)
        del b
        if a.device.startswith('cuda'): torch.cuda.empty_cache()   # the next generator gets the whole GPU


if __name__ == '__main__':
    sys.exit(main())
