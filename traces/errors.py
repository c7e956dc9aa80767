"""The one exception type for problems a user can cause (bad input, bad options, full disk)."""


class MmreplayError(Exception):
    """A problem with the user's input or environment; the CLI prints it on one line, exit 2."""


class TraceError(MmreplayError):
    """A trace file that cannot be read or does not follow format v1."""
