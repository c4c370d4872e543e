"""The WebSocket opening handshake: the upgrade request, which origins and proxies to
trust, admission per address.
"""
