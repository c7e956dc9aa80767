"""One thin module per CLI command: parse options, call one library function, print or write.

The registry below is the whole list: a new command is a module here plus one line in
``COMMANDS`` (``replay/cli.py`` adds each to the ``mmreplay`` group). Command modules import
their heavy dependencies (numba, pyarrow, matplotlib) inside the command function, so importing
them all costs little and ``--help`` starts fast.
"""

from replay.commands import (compare, fit, import_trace, info, layout, record, replay, report,
                             results, share, slice, synth)

COMMANDS = (
    record.command,
    import_trace.command,
    info.command,
    share.command,
    slice.command,
    synth.command,
    fit.command,
    replay.command,
    compare.command,
    layout.command,
    report.command,
    results.command,
)
