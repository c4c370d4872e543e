"""The engine: fan-out, history and presence behind one interface; the single-node (memory)
engine.
"""
