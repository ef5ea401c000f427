"""Paged KV memory: fixed-size blocks, per-sequence block tables, prefix caching.

Pure Python, no torch: the scheduler owns one ``BlockManager`` and decides with it who
runs; the runner only turns block tables into tensor indices. Shaped like nano-vllm's
``engine/block_manager.py`` and vLLM's ``KVCacheManager``.

A *full* block whose key/values have been computed is registered under a key made of its
tokens and the key of the block before it, so the key stands for the whole prefix. A
later sequence whose prompt starts with the same tokens (a shared system prompt, the
history of a conversation) reuses those blocks instead of computing them. Blocks nobody
holds stay cached in a least-recently-freed order and are evicted only when their memory
is needed.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .sequence import Sequence

BlockKey = tuple[int, tuple[int, ...]]  # (hash of the previous block's key, this block's tokens)


@dataclass(eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    key: BlockKey | None = None  # set once the block is full and computed
    key_hash: int | None = None


@dataclass
class PrefixCacheStats:
    queried_tokens: int = 0
    hit_tokens: int = 0
    evicted_blocks: int = 0


class BlockManager:
    """Hands out blocks of ``block_size`` token positions from a pool of ``num_blocks``.

    Block 0 is never handed out: the runner writes padding into it.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 2 or block_size < 1:
            raise ValueError("need at least 2 blocks of at least 1 token")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # free blocks, least recently freed first; block 0 is reserved for padding
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(1, num_blocks))
        self._cached: dict[int, int] = {}  # key hash -> block id (computed, full blocks)
        self.stats = PrefixCacheStats()

    # capacity ---------------------------------------------------------------------
    @property
    def num_usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by sequences (cached free blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_usable_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.num_usable_blocks * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # prefix cache -----------------------------------------------------------------
    def _key(self, parent_hash: int, tokens: list[int]) -> tuple[BlockKey, int]:
        key = (parent_hash, tuple(tokens))
        return key, hash(key)

    def _lookup(self, seq: Sequence) -> list[int]:
        """Cached blocks matching the start of ``seq``'s tokens; never the block that
        holds its last token (its logits must be computed)."""
        if not self.enable_prefix_caching:
            return []
        tokens = seq.all_token_ids
        bs = self.block_size
        hits: list[int] = []
        parent = 0
        for i in range((len(tokens) - 1) // bs):
            key, h = self._key(parent, tokens[i * bs : (i + 1) * bs])
            block_id = self._cached.get(h)
            if block_id is None or self.blocks[block_id].key != key:
                break
            hits.append(block_id)
            parent = h
        return hits

    def num_blocks_to_admit(self, seq: Sequence) -> tuple[list[int], int]:
        """(cached blocks ``seq`` would reuse, free blocks it would take) to hold all its
        tokens: new blocks for the uncached ones, plus cached blocks revived from the free list."""
        hits = self._lookup(seq)
        needed = self.blocks_for(seq.num_tokens) - len(hits)
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # they leave the free list
        return hits, needed + revived

    def admit(self, seq: Sequence, hits: list[int]) -> None:
        """Start ``seq``'s block table with the cached ``hits`` (from ``num_blocks_to_admit``)."""
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
        seq.block_table = list(hits)
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * self.block_size
        self.stats.queried_tokens += seq.num_tokens
        self.stats.hit_tokens += seq.num_cached_tokens

    # growth -----------------------------------------------------------------------
    def num_missing_blocks(self, seq: Sequence, num_tokens: int) -> int:
        """Blocks ``seq`` still needs so that positions ``< num_tokens`` have a place."""
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table))

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Give ``seq`` blocks for positions ``< num_tokens``; the caller checked
        ``num_missing_blocks`` against ``num_free_blocks``."""
        missing = self.num_missing_blocks(seq, num_tokens)
        if missing > len(self._free):
            raise RuntimeError("out of KV blocks")  # the scheduler never asks for more than is free
        for _ in range(missing):
            block_id, _ = self._free.popitem(last=False)  # least recently freed
            block = self.blocks[block_id]
            if block.key_hash is not None:  # evict its cached content
                if self._cached.get(block.key_hash) == block_id:
                    del self._cached[block.key_hash]
                block.key = block.key_hash = None
                self.stats.evicted_blocks += 1
            block.ref_count = 1
            seq.block_table.append(block_id)

    def register_computed(self, seq: Sequence) -> None:
        """Make ``seq``'s newly computed full blocks findable by later sequences."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        tokens = seq.all_token_ids
        parent = seq.block_hashes[-1] if seq.block_hashes else 0
        for i in range(len(seq.block_hashes), num_full):
            key, h = self._key(parent, tokens[i * bs : (i + 1) * bs])
            block = self.blocks[seq.block_table[i]]
            if block.key_hash is None:
                block.key, block.key_hash = key, h
                self._cached.setdefault(h, block.block_id)
            seq.block_hashes.append(h)
            parent = h

    # release ----------------------------------------------------------------------
    def free(self, seq: Sequence) -> None:
        """Return ``seq``'s blocks. Cached ones stay findable until evicted; the tail
        goes first so the deepest (least shared) blocks are evicted first."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.key_hash is None:
                    self._free[block_id] = None
                    self._free.move_to_end(block_id, last=False)  # worthless: reuse first
                else:
                    self._free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
