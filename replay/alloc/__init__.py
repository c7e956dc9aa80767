"""Allocation-level replay (--allocator): the program, the numba loop calling the malloc family,
the child process that runs it, and its runs.
"""
