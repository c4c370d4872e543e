"""The wire format, without I/O: frames in and out, requests and replies, positions."""
