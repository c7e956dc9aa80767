"""Where synthetic mappings live: a top-down first-fit model of Linux's mmap placement.

For an anonymous mmap without a hint, Linux (mm/mmap.c, vm_unmapped_area with
VM_UNMAPPED_AREA_TOPDOWN, the x86-64 default layout) picks the highest free gap below mmap_base
that is long enough and places the mapping at the top of that gap. This module models exactly
that on page numbers, ignoring THP alignment (the layout of <= 6.6 and of 6.12+ for lengths that
are not 2 MiB multiples), so synthetic traces carry addresses a real process could have seen:
live mappings never overlap and freed ranges are reused, so 10^8 events never run out of space.

The space below the lowest live mapping is one huge gap, the "frontier": it is kept apart, as a
single address, so it is not the longest gap on every path of the tree. The holes between live
mappings are kept in a treap ordered by start address, each node also holding the longest hole
in each child's subtree; the highest hole that fits is found in O(log holes), and the frontier
serves a request when no hole can.

The tree functions are numba-jitted and work on plain arrays, so the generator's hot loop calls
them directly. ``GapList`` is the same model in plain Python (a sorted list scanned from the
top): the reference the tests compare against.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from traces.jit import njit
from traces.schema import PAGE_SIZE

PAGE_SHIFT = 12
# mmap_base of an x86-64 process without ASLR: TASK_SIZE (0x7ffffffff000) minus the 128 MiB
# minimum stack gap, as seen under `setarch -R`.
MMAP_TOP = 0x7FFFF7FFF000
# Program break of a small non-randomized PIE; synthetic brk calls grow the heap from here.
BRK_BASE = 0x555555559000
BRK_ROOM = 1 << 40  # the heap may grow 1 TiB; mappings stay above it
MMAP_FLOOR = BRK_BASE + BRK_ROOM
assert MMAP_TOP % PAGE_SIZE == 0 and MMAP_FLOOR % PAGE_SIZE == 0

# Node 0 is a sentinel standing for "no node": an all-zero row (an empty subtree's longest gap
# is 0, below any request) with the lowest priority.
NIL = 0
# Columns of the node table, one row (one 64-byte cache line) per node. Each node keeps the
# longest gap of each child's subtree (LMAX, RMAX), so a descent reads one line per level.
# LEFT/RIGHT and LMAX/RMAX are laid out so that ``side + MAX_OF`` is the maximum of ``side``.
KEY, END, LEFT, RIGHT, PARENT, PRIO, LMAX, RMAX = range(8)
MAX_OF = LMAX - LEFT
# Slots of the ``meta`` array.
ROOT, USED, FREE_COUNT, RNG, FLOOR, FRONTIER = range(6)


def _leaf_jit(function=None, *, inline: str = "never"):
    """njit for helpers that only index arrays they are handed, never create or keep one.

    Numba reference-counts array arguments with atomic increments that its pruning pass cannot
    remove around loops; here that costs ~20 ns per call, more than the tree work itself. These
    helpers are compiled without the runtime's reference counting (``_nrt=False``, the switch
    numba's maintainers use for this case, numba issue 2350), falling back to plain njit should a
    numba release drop that option (numba raises KeyError for unknown options).
    ``inline="always"`` pastes the smallest helpers into their callers.
    """
    if function is None:
        return lambda f: _leaf_jit(f, inline=inline)
    try:
        return njit(cache=True, _nrt=False, inline=inline)(function)
    except KeyError:  # pragma: no cover - depends on the numba release
        return njit(cache=True, inline=inline)(function)


@_leaf_jit(inline="always")
def splitmix64(state: np.ndarray, slot: int) -> np.uint64:
    """Next value of a SplitMix64 stream kept in ``state[slot]`` (pure integer arithmetic)."""
    z = np.uint64(state[slot]) + np.uint64(0x9E3779B97F4A7C15)
    state[slot] = np.int64(z)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def gaps_new(floor_page: int, top_page: int, capacity: int, seed: int):
    """Free space [floor_page, top_page): all frontier, no holes yet.

    ``capacity`` bounds the holes ever held at once: k live mappings leave at most k holes, so
    the most mappings alive at once plus 2 always suffices. The arrays are allocated, not
    filled, so the pages behind unused capacity are never touched.
    """
    capacity = max(capacity, 4) + 1
    nodes = np.empty((capacity, 8), dtype=np.int64)
    nodes[NIL, :] = 0
    nodes[NIL, PRIO] = -1
    free = np.empty(capacity, dtype=np.int64)
    meta = np.zeros(6, dtype=np.int64)
    meta[ROOT] = NIL
    meta[USED] = 1
    meta[RNG] = seed
    meta[FLOOR] = floor_page
    meta[FRONTIER] = top_page
    return nodes, meta, free


@_leaf_jit(inline="always")
def _longest(nodes, i):
    """Longest gap in the subtree of ``i`` (0 for the sentinel)."""
    return max(nodes[i, END] - nodes[i, KEY], nodes[i, LMAX], nodes[i, RMAX])


@_leaf_jit(inline="always")
def _pull_up(nodes, i):
    """The subtree of ``i`` changed: refresh the maxima its ancestors keep, until one holds."""
    while True:
        p = nodes[i, PARENT]
        if p == NIL:
            return
        field = LMAX + np.int64(nodes[p, RIGHT] == i)
        longest = _longest(nodes, i)
        if nodes[p, field] == longest:
            return
        nodes[p, field] = longest
        i = p


@_leaf_jit(inline="always")
def _rotate_up(nodes, meta, x):
    """Rotate ``x`` above its parent, keeping the in-order sequence."""
    p = nodes[x, PARENT]
    g = nodes[p, PARENT]
    side = LEFT + np.int64(nodes[p, RIGHT] == x)  # x's side under p
    other = (LEFT + RIGHT) - side
    b = nodes[x, other]
    nodes[p, side] = b
    nodes[p, side + MAX_OF] = nodes[x, other + MAX_OF]
    nodes[b, PARENT] = p  # harmless on the sentinel
    nodes[x, other] = p
    nodes[p, PARENT] = x
    nodes[x, other + MAX_OF] = _longest(nodes, p)
    nodes[x, PARENT] = g
    if g == NIL:
        meta[ROOT] = x
    else:  # g's maximum for this side is unchanged: the subtree holds the same gaps
        nodes[g, LEFT + np.int64(nodes[g, RIGHT] == p)] = x


@_leaf_jit
def _insert(nodes, meta, free, key, end, pred, succ):
    """Add gap [key, end) whose in-order neighbours are ``pred`` and ``succ`` (NIL if none).

    Of two in-order neighbours one is always free on the facing side (pred has no right child
    or succ has no left child), so the new leaf goes there without another descent.
    """
    if meta[FREE_COUNT] > 0:
        meta[FREE_COUNT] -= 1
        n = free[meta[FREE_COUNT]]
    else:
        n = meta[USED]
        meta[USED] += 1
    nodes[n, KEY] = key
    nodes[n, END] = end
    nodes[n, LEFT] = NIL
    nodes[n, RIGHT] = NIL
    nodes[n, LMAX] = 0
    nodes[n, RMAX] = 0
    nodes[n, PRIO] = np.int64(splitmix64(meta, RNG) >> np.uint64(1))
    if meta[ROOT] == NIL:
        nodes[n, PARENT] = NIL
        meta[ROOT] = n
        return
    if pred != NIL and nodes[pred, RIGHT] == NIL:
        nodes[pred, RIGHT] = n
        nodes[n, PARENT] = pred
    else:
        nodes[succ, LEFT] = n
        nodes[n, PARENT] = succ
    _pull_up(nodes, n)
    while nodes[n, PARENT] != NIL and nodes[n, PRIO] > nodes[nodes[n, PARENT], PRIO]:
        _rotate_up(nodes, meta, n)


@_leaf_jit
def _delete(nodes, meta, free, x):
    """Remove node ``x`` (the tree must be consistent, including x's own length)."""
    while True:
        left, right = nodes[x, LEFT], nodes[x, RIGHT]
        if left == NIL and right == NIL:
            break
        # Rotate up the child of higher priority (the sentinel's -1 loses to any real node).
        _rotate_up(nodes, meta, left if nodes[left, PRIO] > nodes[right, PRIO] else right)
    p = nodes[x, PARENT]
    if p == NIL:
        meta[ROOT] = NIL
    else:
        side = LEFT + np.int64(nodes[p, RIGHT] == x)
        nodes[p, side] = NIL
        nodes[p, side + MAX_OF] = 0
        _pull_up(nodes, p)
    free[meta[FREE_COUNT]] = x
    meta[FREE_COUNT] += 1


@_leaf_jit
def gaps_alloc(nodes, meta, free, pages):
    """Top-down first fit: take ``pages`` from the top of the highest gap that fits; -1 if none."""
    x = meta[ROOT]
    if _longest(nodes, x) < pages:  # no hole fits: the frontier moves down
        if meta[FRONTIER] - meta[FLOOR] < pages:
            return -1
        meta[FRONTIER] -= pages
        return meta[FRONTIER]
    while True:  # right if the right subtree fits, else stop here if this hole fits, else left
        go_right = nodes[x, RMAX] >= pages
        if (not go_right) & (nodes[x, END] - nodes[x, KEY] >= pages):
            break
        x = nodes[x, LEFT + np.int64(go_right)]
    start = nodes[x, END] - pages
    nodes[x, END] = start
    _pull_up(nodes, x)
    if start == nodes[x, KEY]:
        _delete(nodes, meta, free, x)
    return start


@_leaf_jit
def gaps_release(nodes, meta, free, start, pages):
    """Return [start, start + pages) to the free space, merging with the gaps it touches.

    A release may take one more node; ``gaps_new``'s capacity covers it.
    """
    end = start + pages
    if start == meta[FRONTIER]:  # the lowest mapping goes: the frontier rises past it
        x = meta[ROOT]
        lowest = NIL
        while x != NIL:
            lowest = x
            x = nodes[x, LEFT]
        if lowest != NIL and nodes[lowest, KEY] == end:  # and swallows the hole above it
            meta[FRONTIER] = nodes[lowest, END]
            _delete(nodes, meta, free, lowest)
        else:
            meta[FRONTIER] = end
        return
    pred = NIL
    succ = NIL
    x = meta[ROOT]
    while x != NIL:  # no gap starts inside the range, so one descent finds both neighbours
        go_right = nodes[x, KEY] < start
        pred = x if go_right else pred
        succ = succ if go_right else x
        x = nodes[x, LEFT + np.int64(go_right)]
    join_pred = pred != NIL and nodes[pred, END] == start
    join_succ = succ != NIL and nodes[succ, KEY] == end
    if join_pred and join_succ:
        merged_end = nodes[succ, END]
        _delete(nodes, meta, free, succ)
        nodes[pred, END] = merged_end
        _pull_up(nodes, pred)
    elif join_pred:
        nodes[pred, END] = end
        _pull_up(nodes, pred)
    elif join_succ:
        nodes[succ, KEY] = start
        _pull_up(nodes, succ)
    else:
        _insert(nodes, meta, free, start, end, pred, succ)


def gaps_check(nodes: np.ndarray, meta: np.ndarray) -> None:
    """Assert the tree's invariants: order, heap priorities, parent links and stored maxima."""
    def walk(x: int, parent: int) -> int:
        if x == NIL:
            return 0
        assert nodes[x, PARENT] == parent, "parent link"
        assert nodes[x, KEY] < nodes[x, END], "empty gap kept"
        for side in (LEFT, RIGHT):
            child = int(nodes[x, side])
            if child != NIL:
                assert nodes[child, PRIO] <= nodes[x, PRIO], "heap order"
            assert nodes[x, side + MAX_OF] == walk(child, x), "stored maximum"
        return max(int(nodes[x, END] - nodes[x, KEY]), int(nodes[x, LMAX]), int(nodes[x, RMAX]))

    walk(int(meta[ROOT]), NIL)
    gaps = gaps_list(nodes, meta)
    holes = gaps[1:] if meta[FRONTIER] > meta[FLOOR] else gaps
    assert all(start > meta[FRONTIER] for start, _ in holes), "a hole touches the frontier"
    assert all(a[1] < b[0] for a, b in zip(gaps, gaps[1:])), "gaps out of order or touching"


def gaps_list(nodes: np.ndarray, meta: np.ndarray) -> list[tuple[int, int]]:
    """The free gaps in address order, the frontier first (for tests and debugging)."""
    out, stack, x = [], [], int(meta[ROOT])
    if meta[FRONTIER] > meta[FLOOR]:
        out.append((int(meta[FLOOR]), int(meta[FRONTIER])))
    while stack or x != NIL:
        while x != NIL:
            stack.append(x)
            x = int(nodes[x, LEFT])
        x = stack.pop()
        out.append((int(nodes[x, KEY]), int(nodes[x, END])))
        x = int(nodes[x, RIGHT])
    return out


class GapList:
    """The same top-down first-fit model in plain Python: sorted gaps, scanned from the top."""

    def __init__(self, floor_page: int, top_page: int) -> None:
        self.starts = [floor_page]
        self.ends = [top_page]

    def alloc(self, pages: int) -> int:
        for i in range(len(self.starts) - 1, -1, -1):
            if self.ends[i] - self.starts[i] >= pages:
                start = self.ends[i] - pages
                if start == self.starts[i]:
                    del self.starts[i], self.ends[i]
                else:
                    self.ends[i] = start
                return start
        return -1

    def release(self, start: int, pages: int) -> None:
        end = start + pages
        i = bisect_left(self.starts, start)
        join_pred = i > 0 and self.ends[i - 1] == start
        join_succ = i < len(self.starts) and self.starts[i] == end
        if join_pred and join_succ:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i], self.ends[i]
        elif join_pred:
            self.ends[i - 1] = end
        elif join_succ:
            self.starts[i] = start
        else:
            self.starts.insert(i, start)
            self.ends.insert(i, end)

    def gaps(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))
