"""A resumable, rank-aware batch sampler for iteration-based SR training."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

__all__ = ["IterationBatchSampler"]


class IterationBatchSampler(Sampler):
    """Yields, for iterations ``start_iter .. total_iters - 1``, this rank's batch of keys.

    The global sample stream is fixed by ``seed`` alone: sample number ``s`` is image
    ``perm_e[s mod n]`` of epoch ``e = s // n`` (``perm_e`` a permutation drawn from
    ``seed`` and ``e``) with augmentation seed ``(seed, s)``. Iteration ``it`` consumes
    samples ``it * global_batch ... (it + 1) * global_batch - 1``; rank ``r`` of ``world``
    takes the ``r``-th slice of ``global_batch // world``. Hence a resumed run sees exactly
    the samples an uninterrupted one would, and the data do not depend on the number of
    DataLoader workers. Keys are ``(index, (seed, s))`` tuples understood by fastsr datasets.

    Raises:
        ValueError: ``global_batch`` not divisible by ``world`` or non-positive sizes.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, start_iter: int, total_iters: int,
                 rank: int = 0, world: int = 1):
        if num_items < 1 or global_batch < 1:
            raise ValueError(f"num_items and global_batch must be >= 1, got {num_items}, {global_batch}")
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world}")
        self.n, self.gb, self.seed = num_items, global_batch, int(seed)
        self.start, self.total, self.rank, self.world = start_iter, total_iters, rank, world
        self.per_rank = global_batch // world
        self._perm_epoch, self._perm = -1, None

    def _index(self, s: int) -> int:
        e = s // self.n
        if e != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), e
        return self._perm[s % self.n]

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self):
        for it in range(self.start, self.total):
            first = it * self.gb + self.rank * self.per_rank
            yield [(self._index(s), (self.seed, s)) for s in range(first, first + self.per_rank)]
