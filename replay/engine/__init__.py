"""The native replay: the op program, its compiler, the numba engine, its pure-Python model,
placement (policies, the replay's own address region) and threads.
"""
