"""Ordered parallel map for simulators: results arrive in input order, so a file written from them is
identical to the serial one (each block has its own random stream)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``map(fn, items)`` in ``workers`` processes (fork where available), results in input order.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one). One item is
    handed out at a time, so at most a few results wait in memory while the consumer writes.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=1)
