"""Who is subscribed to a topic exactly, for topics with presence (no I/O)."""


class PresenceTable:
    def __init__(self) -> None:
        # topic: client id: user (None for anonymous clients)
        self._topics: dict[str, dict[str, str | None]] = {}

    def join(self, topic: str, client_id: str, user: str | None) -> bool:
        """Add the client; False if it was there already."""
        members = self._topics.setdefault(topic, {})
        if client_id in members:
            return False
        members[client_id] = user
        return True

    def leave(self, topic: str, client_id: str) -> bool:
        """Remove the client; False if it was not there."""
        members = self._topics.get(topic)
        if members is None or client_id not in members:
            return False
        del members[client_id]
        if not members:
            del self._topics[topic]
        return True

    def members(self, topic: str) -> list[dict[str, str | None]]:
        return [
            {"client_id": client_id, "user": user}
            for client_id, user in self._topics.get(topic, {}).items()
        ]

    def topics(self) -> list[tuple[str, dict[str, str | None]]]:
        """Every topic with its members (a copy: safe to await while going through it)."""
        return [(topic, dict(members)) for topic, members in self._topics.items()]
