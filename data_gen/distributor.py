"""Distributor: split a run deterministically across the processes `accelerate launch` starts (one per GPU)."""
from __future__ import annotations
import os

__all__ = ['Distributor']


class Distributor:
    "This process's rank and the world size; under `accelerate launch` they come from accelerate's `PartialState`."
    def __init__(self):
        self.state = None
        if int(os.environ.get('WORLD_SIZE', '1')) > 1:
            import torch
            from accelerate import PartialState
            # without a GPU, accelerate only goes multi-process when told it is on CPU (gloo backend)
            self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1

    @property
    def is_main(self) -> bool: return self.rank == 0

    @property
    def device(self):
        "The device accelerate assigned to this process (None when not distributed)."
        return str(self.state.device) if self.state else None

    @property
    def tag(self) -> str: return f' [{self.rank + 1}/{self.world}]' if self.world > 1 else ''

    def shard(self, items: list) -> list:
        "This process's share: every `world`-th item from `rank`, so shares are disjoint, whole and stable."
        return items[self.rank::self.world]

    def wait(self):
        "Block until every process reaches this point."
        if self.state: self.state.wait_for_everyone()
