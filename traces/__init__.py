"""mmreplay traces: the format v1 contract and everything that produces or reads a trace.

A trace is a plain ``pyarrow.Table``; ``read_trace`` and ``write_trace`` are the only doors.
"""

from .errors import MmreplayError, TraceError
from .version import __version__

# The format functions load on first use (PEP 562): code that only needs the error types or the
# constants (the replay engine inside a VM guest, where every import costs seconds) does not pay
# for pyarrow.
_FORMAT_NAMES = ("build_table", "new_metadata", "read_trace", "trace_metadata", "validate",
                 "write_trace")


def __getattr__(name):
    if name in _FORMAT_NAMES:
        from . import format as _format
        return getattr(_format, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MmreplayError", "TraceError", "build_table", "new_metadata", "read_trace",
           "trace_metadata", "validate", "write_trace", "__version__"]
