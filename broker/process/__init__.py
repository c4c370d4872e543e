"""The daemon process: signals, systemd, workers under a supervisor, logging."""
