"""mmreplay's version (results and traces record it; ``mmreplay --version`` prints it)."""

__version__ = "0.1.0"
