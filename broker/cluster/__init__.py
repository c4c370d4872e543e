"""The redis engine: nodes and workers sharing topics, history and presence through Redis."""
