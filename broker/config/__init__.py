"""The TOML config: its schema and validation, plugin options, Redis URLs."""
