"""The command line: serve, check-config, and the client commands sub and pub."""
