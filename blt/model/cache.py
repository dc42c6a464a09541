"""KV caches of attention layers: `LayerCache`, which a forward over several positions extends (the prefill of
generation, scoring), and `KVCache`, preallocated for B rows, a ring buffer under a sliding window, which
the one-position steps of `blt.model.steps` write in place."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LayerCache:
    """Rotated keys and values of one attention layer for past positions (owned by whoever runs steps)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, H_kv, T_past, hd)
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values; returns past + new."""
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v

    def keep_last(self, n: int) -> None:
        """Forget all but the last n positions (sliding windows need only window - 1)."""
        if self.k is not None:
            start = max(0, self.k.shape[2] - n)
            self.k, self.v = self.k[:, :, start:], self.v[:, :, start:]

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


class KVCache:
    """Keys and values of one attention layer's past positions for B rows, (B, H, capacity, hd), written in
    place into storage allocated once (`LayerCache.extend` concatenates, copying the whole cache each step).

    Rows sit at different positions (``lengths``, the positions each row holds, also kept on the host as
    ``held``). With a window, every row is a ring of ``window`` slots (position p in slot p % window;
    attention does not depend on the order of its keys); without one, slot = position, the capacity is the
    longest row's (grown by doubling) and a shorter row's extra slots stay hidden. Steps attend over the
    first `used` slots only, the ones any row has written.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, held: list[int], window: int | None):
        self.k, self.v, self.held, self.window = k, v, held, window

    @property
    def lengths(self) -> torch.Tensor:
        """``held`` as a tensor (B,)."""
        return torch.tensor(self.held, device=self.k.device)

    @classmethod
    def from_prefill(cls, cache: LayerCache, length: int, window: int | None) -> KVCache:
        """One row, taking over a prefill's cache, which holds the last ``len(cache)`` of ``length`` positions."""
        _, heads, held, head_dim = cache.k.shape
        keep = held if window is None else min(held, window - 1)
        capacity = window if window is not None else max(64, 2 * length)
        # Zeros, not garbage: a step attends over every used slot, masking other rows' ones, and 0 * NaN is NaN.
        k = cache.k.new_zeros(1, heads, capacity, head_dim)
        v = cache.v.new_zeros(1, heads, capacity, head_dim)
        slots = torch.arange(length - keep, length, device=cache.k.device) % capacity
        k[0][:, slots] = cache.k[0, :, held - keep :]
        v[0][:, slots] = cache.v[0, :, held - keep :]
        return cls(k, v, [length], window)

    @classmethod
    def cat(cls, parts: list[KVCache]) -> KVCache:
        """The rows of several caches of one layer as one (copied)."""
        capacity = max(p.k.shape[2] for p in parts)

        def padded(t: torch.Tensor) -> torch.Tensor:  # (b, H, c, hd) -> (b, H, capacity, hd)
            return F.pad(t, (0, 0, 0, capacity - t.shape[2]))

        return cls(torch.cat([padded(p.k) for p in parts]), torch.cat([padded(p.v) for p in parts]),
                   [n for p in parts for n in p.held], parts[0].window)

    def rows(self, index: list[int]) -> KVCache:
        """The rows ``index`` (copies; `put_rows` writes them back)."""
        at = torch.tensor(index, device=self.k.device)
        return KVCache(self.k[at], self.v[at], [self.held[i] for i in index], self.window)

    def put_rows(self, index: list[int], part: KVCache) -> None:
        if part.k.shape[2] > self.k.shape[2]:
            self._grow(part.k.shape[2])
        capacity = part.k.shape[2]
        at = torch.tensor(index, device=self.k.device)
        self.k[at, :, :capacity], self.v[at, :, :capacity] = part.k, part.v
        for i, n in zip(index, part.held):
            self.held[i] = n

    def _grow(self, capacity: int) -> None:
        more = capacity - self.k.shape[2]
        self.k, self.v = F.pad(self.k, (0, 0, 0, more)), F.pad(self.v, (0, 0, 0, more))

    def make_room(self) -> None:
        """Without a window, double the capacity when a row is full (call before `visible` and `write`)."""
        if self.window is None and max(self.held) == self.k.shape[2]:
            self._grow(2 * self.k.shape[2])

    def used(self) -> int:
        """Slots that hold a position of some row once the next position is written (the first ``used``);
        ask before `write`."""
        return min(self.k.shape[2], max(self.held) + 1)

    def visible(self, first_visible: list[int]) -> torch.Tensor | None:
        """Which of the `used` slots the next position of each row sees: its own past within the window and
        the document that starts at ``first_visible[b]``, the new position included. -> bool (B, used), or
        None when every row sees every used slot."""
        capacity, n = self.k.shape[2], self.used()
        ring = self.window is not None

        def sees_all(t: int, first: int) -> bool:  # t: the row's new position
            lowest = max(0, t + 1 - capacity) if ring else 0  # the oldest position it holds
            return t + 1 >= n and lowest >= first

        if all(sees_all(t, first) for t, first in zip(self.held, first_visible)):
            return None
        t = self.lengths[:, None]
        slots = torch.arange(n, device=self.k.device)[None]
        positions = t - (t - slots) % capacity if ring else slots  # position held by each slot
        first = torch.tensor(first_visible, device=self.k.device)[:, None]
        return (positions >= first) & (positions <= t)

    def write_one(self, k: torch.Tensor, v: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`write` for a batch of one row: k, v (H, hd); returns the keys and values of the first ``n`` slots
        (`used`, asked before), (H, n, hd)."""
        slot = self.held[0] % self.k.shape[2] if self.window is not None else self.held[0]
        keys, values = self.k[0], self.v[0]  # (H, capacity, hd)
        keys[:, slot], values[:, slot] = k, v
        self.held = [self.held[0] + 1]
        return keys[:, :n], values[:, :n]

    def write(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The new position's k, v (B, H, hd) of every row."""
        slots = self.lengths % self.k.shape[2] if self.window is not None else self.lengths
        rows = torch.arange(k.shape[0], device=k.device)
        self.k[rows, :, slots] = k
        self.v[rows, :, slots] = v
        self.held = [n + 1 for n in self.held]

    def select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (finished rows leave the batch)."""
        at = torch.tensor(keep, device=self.k.device)
        self.k, self.v = self.k[at], self.v[at]
        self.held = [self.held[i] for i in keep]
