"""One client's connection: reading requests, its outbox and writes, TLS below it."""
