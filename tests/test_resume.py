"""Preemption: a training run stopped by SIGTERM (or an exception) and rerun with --resume ends with the weights an
uninterrupted run writes (CPU, same seed); in epoch mode, in --steps mode, from a frozen phase, and in sequences."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, torch
from safetensors.torch import load_file
from conftest import BIN, run_cli

from aidetect.demo import example_datasets

TINY = ['--arch', 'simple_cnn', '--no-pretrained', '--size', '32', '--bs', '8', '--aug', 'none', '--seed', '3']


@pytest.fixture(scope='module')
def data():
    return example_datasets()['scenes-train']


def _same_weights(a: Path, b: Path):
    wa, wb = load_file(str(a.with_suffix('.safetensors'))), load_file(str(b.with_suffix('.safetensors')))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def _history(m: Path) -> list:
    return json.loads(m.with_suffix('.json').read_text())['history']


def _sigterm_after_first_checkpoint(args: list, ckpt: Path, timeout=300) -> subprocess.CompletedProcess:
    "Run `aidetect train ARGS`, send SIGTERM once the first checkpoint is written, and wait for it to stop."
    p = subprocess.Popen([str(BIN/'aidetect'), 'train', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (ckpt/'state.pt').exists():
        assert p.poll() is None, f'train ended before its first checkpoint: {p.communicate()}'
        assert time.time() - t0 < timeout, 'no checkpoint written'
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.parametrize('mode', [['--epochs', '6', '--lr', '1e-3'],
                                  ['--steps', '12', '--eval-every', '2', '--patience', '4', '--lr', '1e-3']],
                         ids=['epochs', 'steps'])
def test_sigterm_then_resume_gives_the_uninterrupted_weights(data, tmp_path, mode):
    whole, cut = tmp_path/'whole', tmp_path/'cut'
    run_cli('aidetect', 'train', data, '--out', whole, *TINY, *mode, check=0)
    assert not Path(f'{whole}.ckpt').exists() and not whole.with_suffix('.pkl').exists()   # no pickle unless asked
    assert oct(whole.with_suffix('.safetensors').stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    p = _sigterm_after_first_checkpoint([data, '--out', cut, *TINY, *mode], Path(f'{cut}.ckpt'))
    if p.returncode == 0: pytest.skip('the run finished before SIGTERM arrived')   # a very fast machine: nothing to resume
    assert p.returncode == 143, p.stderr
    assert 'Traceback' not in p.stderr and '--resume' in p.stderr and 'terminated (SIGTERM)' in p.stderr
    assert not cut.with_suffix('.safetensors').exists()
    if '--epochs' in mode:   # the refusals are the same in both modes: checked once
        again = run_cli('aidetect', 'train', data, '--out', cut, *TINY, *mode)   # a plain rerun would throw the checkpoint away
        assert again.returncode == 2 and '--resume' in again.stderr and 'Traceback' not in again.stderr
        other = run_cli('aidetect', 'train', data, '--out', cut, *TINY, *mode, '--seed', '4', '--resume')
        assert other.returncode == 2 and 'seed 3 then, 4 now' in other.stderr
    done = run_cli('aidetect', 'train', data, '--out', cut, *TINY, *mode, '--resume', check=0)
    assert 'resuming from' in done.stdout and 'lr_find' not in done.stdout
    _same_weights(whole, cut)
    np.testing.assert_allclose([[v for v in r.values()] for r in _history(cut)],
                               [[v for v in r.values()] for r in _history(whole)], rtol=1e-6)
    assert not Path(f'{cut}.ckpt').exists()
    assert {'training'} <= {p.name.split('.')[1] for p in tmp_path.glob('cut.*')}   # the lr-finder and loss plot beside it


def _umask() -> int:
    m = os.umask(0); os.umask(m); return m


def test_a_resumed_fine_tune_repeats_neither_lr_find_nor_the_frozen_phase(data, tmp_path, monkeypatch):
    "A trained body (--init) fine-tunes in two phases; stopped in the second, it resumes there."
    from aidetect.train import train_detector, export_detector
    import aidetect.checkpoint as ck, aidetect.train as tr
    kw = dict(arch='simple_cnn', pretrained=False, size=32, bs=8, aug='none', verbose=False, seed=5)
    base = export_detector(train_detector(data, epochs=1, freeze_epochs=0, lr=1e-3, **kw), tmp_path/'base')['json']
    kw.update(init=str(base), epochs=3, freeze_epochs=2, lr_find_its=5)
    whole = train_detector(data, **kw)
    ckpt = tmp_path/'run.ckpt'
    save = ck.SaveCheckpoint.after_epoch
    def stop_in_full_phase(self):
        save(self)
        if self.phase == 'full' and self.epoch == 1: raise KeyboardInterrupt
    monkeypatch.setattr(ck.SaveCheckpoint, 'after_epoch', stop_in_full_phase)
    with pytest.raises(KeyboardInterrupt): train_detector(data, checkpoint=ckpt, **kw)
    monkeypatch.setattr(ck.SaveCheckpoint, 'after_epoch', save)
    state = torch.load(ckpt/'state.pt', weights_only=True)
    assert (state['phase'], state['epoch']) == ('full', 1)
    monkeypatch.setattr(tr, 'suggest_lr', lambda *a, **k: pytest.fail('lr_find ran again'))
    fits = []
    monkeypatch.setattr(tr.Learner, 'freeze', lambda self: fits.append('freeze'))   # the frozen phase would freeze first
    resumed = train_detector(data, checkpoint=ckpt, resume=True, **kw)
    assert fits == []
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.facts.lr == whole.facts.lr and resumed.facts.epochs_run == whole.facts.epochs_run == 3
    assert torch.load(ckpt/'state.pt', weights_only=True)['done']


def test_an_incremental_sequence_resumes_inside_a_step(tmp_path, monkeypatch):
    "A sequence's step stopped after its first epoch continues from its checkpoint when the command is run again."
    from aidetect.sequence import train_incremental
    import aidetect.checkpoint as ck
    d = example_datasets()
    sets = [d['scenes-train'], d['textures']]
    kw = dict(arch='simple_cnn', pretrained=False, size=32, bs=8, aug='none', epochs=3, lr=1e-3, verbose=False)
    whole = train_incremental(sets, tmp_path/'whole', **kw)
    save, calls = ck.SaveCheckpoint.after_epoch, []
    def stop_once_in_step_2(self):
        save(self)
        calls.append(self.folder.name)
        if self.folder.name.startswith('.step2') and self.epoch == 0: raise KeyboardInterrupt
    monkeypatch.setattr(ck.SaveCheckpoint, 'after_epoch', stop_once_in_step_2)
    with pytest.raises(KeyboardInterrupt): train_incremental(sets, tmp_path/'cut', **kw)
    assert list((tmp_path/'cut').glob('.step2-*.ckpt/state.pt'))
    monkeypatch.setattr(ck.SaveCheckpoint, 'after_epoch', save)
    cut = train_incremental(sets, tmp_path/'cut', **kw)
    assert [s['model'] for s in cut['steps']] == [s['model'] for s in whole['steps']]
    for s in whole['steps']: _same_weights(tmp_path/'whole'/s['model'], tmp_path/'cut'/s['model'])
    assert not list((tmp_path/'cut').glob('.*.ckpt'))


def _steps(out: Path) -> list:
    return [s['model'] for s in json.loads((out/'sequence.json').read_text())['steps']]


def test_sigkill_during_a_sequence_then_rerun_equals_a_run_never_killed(tmp_path):
    "Killed with SIGKILL inside step 2 (at a random moment after its first checkpoint: in an epoch or a write), rerun: the same models."
    import random
    d = example_datasets()
    args = ['train', '--incremental', d['scenes-train'], d['textures'], *TINY, '--epochs', '4', '--lr', '1e-3']
    run_cli('aidetect', *args, '--out', tmp_path/'whole', check=0)
    out, rng, killed = tmp_path/'cut', random.Random(0), 0
    for step in (2,):
        p = subprocess.Popen([str(BIN/'aidetect'), *map(str, args), '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.time()
        while not list(out.glob(f'.step{step}-*.ckpt/state.pt')) and p.poll() is None and time.time() - t0 < 300: time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))   # anywhere in the epochs that follow, a write included
        p.kill(); p.wait()
        killed += p.returncode == -signal.SIGKILL
    if not killed: pytest.skip('the sequence finished before SIGKILL arrived')
    done = run_cli('aidetect', *args, '--out', out, check=0)
    assert _steps(out) == _steps(tmp_path/'whole'), done.stdout
    for m in _steps(out): _same_weights(tmp_path/'whole'/m, out/m)   # the weights (safetensors orders its header's metadata freely)
    assert not list(out.glob('.step*')) and sorted(f.name for f in out.glob('step*')) == sorted(f.name for f in (tmp_path/'whole').glob('step*'))


def test_a_second_run_on_a_sequence_being_written_is_refused(tmp_path):
    from aidetect.dataset import DatasetLock
    d = example_datasets()
    lock = DatasetLock(tmp_path/'seq').acquire()
    try:
        p = run_cli('aidetect', 'train', '--incremental', d['scenes-train'], d['textures'], *TINY, '--out', tmp_path/'seq')
    finally: lock.release()
    assert p.returncode == 2 and 'is being written by' in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_checkpoints_without_a_validation_split(data, tmp_path):
    "--valid-pct 0: the epochs have no validation numbers (None), and the checkpoint keeps them as such."
    from aidetect.train import train_detector
    train_detector(data, arch='simple_cnn', pretrained=False, size=32, bs=8, aug='none', epochs=2, lr=1e-3, valid_pct=0,
                   verbose=False, checkpoint=tmp_path/'c')
    st = torch.load(tmp_path/'c'/'state.pt', weights_only=True)
    assert st['done'] and len(st['values']) == 2 and st['values'][0][1] is None


def test_a_checkpoint_path_that_is_a_file_is_refused_before_training(data, tmp_path):
    Path(f'{tmp_path/"m"}.ckpt').write_text('not a folder')
    p = run_cli('aidetect', 'train', data, '--out', tmp_path/'m', *TINY, '--epochs', '1', '--lr', '1e-3')
    assert p.returncode == 2 and 'is a file, not a checkpoint folder' in p.stderr and 'Traceback' not in p.stderr, p.stderr
    assert 'epoch' not in p.stdout   # refused before any epoch
