"""One broker node: its listeners, the connections it owns, reloads and shutdown."""
