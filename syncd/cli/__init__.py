"""The ``syncd`` command line (``main.main`` is the entry point)."""
