"""mmreplay traces: the format v1 contract and everything that produces or reads a trace.

A trace is a plain ``pyarrow.Table``; ``read_trace`` and ``write_trace`` are the only doors.
"""

__version__ = "0.1.0"

from .errors import MmreplayError, TraceError  # noqa: E402
from .format import (build_table, new_metadata, read_trace, trace_metadata, validate,  # noqa: E402
                     write_trace)

__all__ = ["MmreplayError", "TraceError", "build_table", "new_metadata", "read_trace",
           "trace_metadata", "validate", "write_trace", "__version__"]
