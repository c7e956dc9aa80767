"""Reporters: text tables, ASCII layouts and PNG pictures. They only read results, never run
replays.
"""
