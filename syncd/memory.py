"""Keep the process's memory near what it holds: large buffers go back to the OS on free.

Mail arrives in buffers of megabytes (FETCH batches, big messages). glibc serves those
from mmap at first, but after the first such buffer is freed it raises its mmap threshold
(up to 32 MB) and serves later ones from the heap, where freed holes between live small
objects stay resident. Fixing the threshold at 1 MiB (which also switches the raising
off) keeps large buffers in mmap, so each is unmapped when freed; a lower threshold saves
a little more memory but costs the sync speed in page faults. Only the writer's process sets it (the
pipeline does): in the parser processes, which unpickle a multi-megabyte job buffer per
chunk, it cost about 20% more CPU for no memory that matters. Elsewhere than glibc
this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD = 1024 * 1024


@functools.cache
def return_large_buffers() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where it cannot."""
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library loaded
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, THRESHOLD)
    )
    log.debug("malloc thresholds set to %d bytes: %s", THRESHOLD, done)
    return done
