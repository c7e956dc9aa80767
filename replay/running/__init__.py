"""Running replays: one configuration (its options, runs, session, execute), several interleaved
(compare), copies at once (copies), and capturing the address space (layout).
"""
