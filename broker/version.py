__version__ = "0.1.0"

# The Server header of every HTTP answer (handshake, admin).
SERVER_NAME = f"trio-broker/{__version__}"
