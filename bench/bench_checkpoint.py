"""What a resumable checkpoint costs: the seconds `SaveCheckpoint` takes to write one (weights, optimiser state,
random states, history; `aidetect.checkpoint`) ÷ the seconds of one training epoch it follows, for the same learner,
measured side by side in one run. The epoch here is deliberately short (`--batches` batches of `--bs` images at
`--size` px on ready tensors); a real epoch is hundreds of batches, so the printed ratio is an upper bound on the
slowdown, and ratio × batches / real batches per epoch is the real one.

    python bench/bench_checkpoint.py [--arch resnet34] [--size 224] [--bs 16] [--batches 8]
"""
import argparse, shutil, tempfile, time
from pathlib import Path


def main(arch='resnet34', size=224, bs=16, batches=8, repeats=3):
    import torch
    from fastai.vision.all import DataLoaders, TfmdDL, Learner, CrossEntropyLossFlat
    from fastai.callback.core import Callback
    from aidetect.model import resolve_arch
    from aidetect.checkpoint import SaveCheckpoint
    from fastai.vision.all import vision_learner
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x = torch.randn(bs * batches, 3, size, size); y = torch.randint(0, 2, (bs * batches,))
    ds = list(zip(x, y))
    dls = DataLoaders(TfmdDL(ds, bs=bs, shuffle=True), TfmdDL(ds[:bs], bs=bs))
    learn = vision_learner(dls, resolve_arch(arch)[1], pretrained=False, n_out=2, loss_func=CrossEntropyLossFlat(), normalize=False)
    folder = Path(tempfile.mkdtemp())/'bench.ckpt'
    saver = SaveCheckpoint(folder, 'cycle', dict(identity={}, lr=1e-3, lr_curve=None, started=time.time()))

    class Timed(Callback):
        order = 64
        def before_epoch(self): self.t0 = time.perf_counter()
        def after_epoch(self): self.epoch_s = time.perf_counter() - self.t0
    timed = Timed()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3, cbs=[timed])   # warm-up: the optimiser's state exists from here on
        epochs, saves = [], []
        for _ in range(repeats):
            learn.fit(1, 1e-3, cbs=[timed]); epochs.append(timed.epoch_s)
            saver.learn = learn
            t0 = time.perf_counter(); saver.after_epoch(); saves.append(time.perf_counter() - t0)
    mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    shutil.rmtree(folder.parent, ignore_errors=True)
    ep, sv = sorted(epochs)[len(epochs) // 2], sorted(saves)[len(saves) // 2]
    print(f'{arch} at {size} px, {batches} batches of {bs}: epoch {ep:.2f} s, checkpoint {sv:.2f} s ({mb:.0f} MB); '
          f'checkpoint / epoch = {sv / ep:.3f}; per 1000-batch epoch ≈ {sv / (ep * 1000 / batches):.4f}')


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='resnet34'); p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=16); p.add_argument('--batches', type=int, default=8)
    a = p.parse_args()
    main(a.arch, a.size, a.bs, a.batches)
