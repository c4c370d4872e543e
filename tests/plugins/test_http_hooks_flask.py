"""The Flask backend that docs/plugins.md shows for http_hooks, run as written against the
broker: the example works, or this fails."""

import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from werkzeug.serving import make_server

from tests.conftest import ROOT, Connect, StartBroker
from tests.wsclient import Rejected


@attrs.frozen
class User:
    name: str
    roles: list[str]


def session_user(cookie: str | None) -> User | None:
    """The application's own session lookup, as the example assumes one."""
    users = {"session=alice": User("alice", ["member"]), "session=sam": User("sam", ["staff"])}
    return users.get(cookie or "")


def moderate(data: Any) -> Any:
    return data.replace("darn", "****") if isinstance(data, str) else data


def still_allowed(user: str | None) -> bool:
    return user == "alice"


def example_app() -> Any:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    section = docs.split("### `http_hooks`", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "app = Flask(__name__)" in snippet
    namespace: dict[str, Any] = {
        "__name__": "docs_example",
        "session_user": session_user,
        "moderate": moderate,
        "still_allowed": still_allowed,
    }
    exec(textwrap.dedent(snippet), namespace)
    return namespace["app"]


@pytest.fixture
def flask_backend() -> Iterator[tuple[str, Any]]:
    """The example served on a free port (werkzeug's threaded server, HTTP/1.1)."""
    app = example_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(5)


async def test_the_flask_backend_in_the_docs_runs_the_broker(
    start_broker: StartBroker, connect: Connect, flask_backend: tuple[str, Any]
) -> None:
    base, app = flask_backend
    hooks = {
        "use": "http_hooks",
        "connect_url": f"{base}/broker/connect",
        "subscribe_url": f"{base}/broker/subscribe",
        "publish_url": f"{base}/broker/publish",
        "forward_headers": ["Cookie"],
        "timeout": 2.0,
    }
    broker = await start_broker([hooks])
    alice = await connect(broker, welcome=False, headers={"Cookie": "session=alice"})
    assert (await alice.recv())["op"] == "welcome"
    assert await alice.recv() == {"op": "subscribed", "topic": "user/alice"}
    refused = await alice.request({"op": "subscribe", "topic": "staff/news", "id": 1})
    assert (refused["code"], refused["message"]) == ("forbidden", "staff only")
    sam = await connect(broker, welcome=False, headers={"Cookie": "session=sam"})
    assert (await sam.recv())["op"] == "welcome"
    assert await sam.recv() == {"op": "subscribed", "topic": "user/sam"}
    assert (await sam.request({"op": "subscribe", "topic": "staff/news", "id": 1}))["op"] == "ack"
    await alice.request({"op": "publish", "topic": "user/sam", "data": "darn it", "id": 2})
    assert (await sam.recv())["data"] == "**** it"  # the backend's moderated data
    with pytest.raises(Rejected) as rejected:
        await connect(broker, headers={"Cookie": "session=nobody"})
    assert rejected.value.status == 403 and b"please log in" in rejected.value.body
    # The refresh hook, asked directly: alice goes on, anybody else expires.
    with app.test_client() as http:
        renewed = http.post("/broker/refresh", json={"client_id": "c", "user": "alice"}).json
        assert renewed["result"]["expires_at"] > 0
        ended = http.post("/broker/refresh", json={"client_id": "c", "user": "bob"}).json
        assert ended == {"result": {"expires_at": None}}
