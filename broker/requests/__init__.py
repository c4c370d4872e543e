"""Client requests: one module per op, each on the `Session` a connection offers.

`dispatch.handle` parses a message, calls the op's handler and sends the reply: an
``ack`` (with the fields a handler returns), the handler's own reply, or an error.
"""
