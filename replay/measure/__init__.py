"""Measuring a run: kernel probes (/proc, perf, pagemap), the replay's own memory cgroup,
collapse, and the figures computed from the engine's state.
"""
