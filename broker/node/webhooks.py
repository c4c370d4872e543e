"""The node's webhook sender: posts `broker.core.webhooks` events to ``[webhooks] url`` in
signed batches, one batch at a time so that they arrive in order, retrying a failing
batch with exponential backoff for ``retry_for`` seconds."""

import logging
import socket

import httpx
import trio

from ..config.schema import Config, WebhooksConfig
from ..config.secret_files import first_line
from ..core.stats import Stats
from ..core.webhooks import SIGNATURE_HEADER, Events, Retry, encode_batch, now_ms, signature

log = logging.getLogger("broker.webhooks")

# At shutdown, queued events get one try each within this many seconds at most.
DRAIN_SECONDS = 5.0


def webhook_secret(config: Config) -> bytes | None:
    """The HMAC key ``[webhooks] secret_file`` names (ConfigError if it cannot be read)."""
    webhooks = config.webhooks
    if webhooks is None:
        return None
    secret = first_line("webhooks.secret_file", webhooks.secret_file)
    assert secret is not None
    return secret.encode()


class WebhookSender:
    def __init__(self, events: Events, stats: Stats) -> None:
        self._events = events
        self._stats = stats
        self._config: WebhooksConfig | None = None
        self._secret = b""
        self._wakeup = trio.Event()
        self._batch: bytes | None = None  # not taken yet: a drain posts it again
        self._batch_size = 0
        self._dropped_logged = 0
        self._posting: trio.CancelScope | None = None  # the POST under way
        self._draining = False  # bounded by the caller, unshielded
        # Made at the first POST: an SSL context each, which most brokers never need.
        self._http: httpx.AsyncClient | None = None
        events.queue.on_added = self._added

    def configure(self, config: Config, secret: bytes | None) -> None:
        """What to send where (``secret`` from `webhook_secret`); None: nothing."""
        self._config = config.webhooks
        if config.webhooks is None or secret is None:
            self._events.configure((), 1)
            return
        self._secret = secret
        self._events.configure(config.webhooks.events, config.webhooks.max_queued)

    def _added(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        queue = self._events.queue
        while True:
            if not len(queue) or self._config is None:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            config = self._config
            if len(queue) < config.batch_max:
                await trio.sleep(config.batch_delay)  # more may come, for the same POST
            self._log_drops()
            self._take_batch(config)
            await self._post_until_given_up(config)
            self._batch = None

    def _take_batch(self, config: WebhooksConfig) -> None:
        """The oldest events, as the body to post (the same at every retry)."""
        events = self._events.queue.take(config.batch_max)
        self._batch, self._batch_size = encode_batch(events, now_ms()), len(events)

    def _log_drops(self) -> None:
        dropped = self._events.queue.dropped
        if dropped > self._dropped_logged:
            log.warning(
                "webhooks: %d events dropped, the oldest, with more than [webhooks] "
                "max_queued waiting (%d dropped in all)",
                dropped - self._dropped_logged,
                dropped,
            )
            self._stats.webhook_events_dropped += dropped - self._dropped_logged
            self._dropped_logged = dropped

    async def _post_until_given_up(self, config: WebhooksConfig) -> None:
        retry = Retry(config.retry_for)
        first = True
        while True:
            problem = await self._post(config)
            if problem is None:
                self._stats.webhook_events_sent += self._batch_size
                return
            self._stats.webhook_posts_failed += 1
            delay = retry.next_delay(trio.current_time())
            if delay is None:
                log.warning(
                    "webhooks: %s: gave up a batch of %d events after %g s: %s",
                    config.url,
                    self._batch_size,
                    config.retry_for,
                    problem,
                )
                self._stats.webhook_events_dropped += self._batch_size
                return
            if first:
                log.warning(
                    "webhooks: %s: %s; retrying for up to %g s",
                    config.url,
                    problem,
                    config.retry_for,
                )
                first = False
            await trio.sleep(delay)

    async def _post(self, config: WebhooksConfig) -> str | None:
        """None once the backend took the batch, else what went wrong."""
        body = self._batch
        assert body is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body),
        }
        if self._http is None:
            # No Nagle: a POST leaves in two writes, the second waiting for a delayed ACK.
            nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
            transport = httpx.AsyncHTTPTransport(socket_options=nodelay)
            self._http = httpx.AsyncClient(transport=transport, follow_redirects=False)
        # A shutdown lets a POST under way finish (`stopping` bounds it) rather than cut
        # it off: the backend may have taken the batch, and the drain would send it again.
        self._posting = trio.CancelScope(shield=not self._draining)
        try:
            with self._posting, trio.fail_after(config.timeout):
                response = await self._http.post(config.url, content=body, headers=headers)
        except trio.TooSlowError:
            return f"no answer in {config.timeout:g} s"
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        finally:
            cut_off, self._posting = self._posting.cancelled_caught, None
        if cut_off:
            return f"no answer within {DRAIN_SECONDS:g} s of the shutdown"
        if not 200 <= response.status_code < 300:
            return f"HTTP {response.status_code}"
        return None

    def stopping(self) -> None:
        """The broker is about to stop the sender: the POST under way, if any, may finish
        within `DRAIN_SECONDS` (then the drain's own time starts)."""
        if self._posting is not None:
            self._posting.deadline = min(
                self._posting.deadline, trio.current_time() + DRAIN_SECONDS
            )

    async def drain(self) -> None:
        """At shutdown: the batch being posted and what is queued, one try each (the
        caller bounds it: `DRAIN_SECONDS`)."""
        config = self._config
        if config is None:
            return
        self._draining = True
        self._log_drops()
        while self._batch is not None or len(self._events.queue):
            if self._batch is None:
                self._take_batch(config)
            problem = await self._post(config)
            if problem is None:
                self._stats.webhook_events_sent += self._batch_size
            else:
                log.warning(
                    "webhooks: at shutdown, %d events not delivered: %s", self._batch_size, problem
                )
                self._stats.webhook_events_dropped += self._batch_size
            self._batch = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
