import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage

from broker.wire.frames import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_wsproto_sends(size: int) -> None:
    payload = "x" * size
    server = Connection(ConnectionType.SERVER)
    assert text_frame(payload.encode()) == server.send(TextMessage(data=payload))


def test_client_decodes_it() -> None:
    client = Connection(ConnectionType.CLIENT)  # past the handshake
    client.receive_data(text_frame("héllo".encode()))
    (event,) = list(client.events())
    assert isinstance(event, TextMessage) and event.data == "héllo"
