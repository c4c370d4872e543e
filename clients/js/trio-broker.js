// trio-broker's browser client: a dependency-free ES module (docs/client.md).
//
//   import { Client } from "./trio-broker.js";
//   const client = new Client("ws://127.0.0.1:8080/ws", { token });
//   client.addEventListener("message", (event) => console.log(event.detail));
//   await client.open();
//   await client.subscribe("chat/#");
//   await client.publish("chat/lobby", { text: "hi" });
//
// Requests return promises settled by the broker's reply (rejected with a BrokerError
// carrying the protocol's code). When the connection drops, the client reconnects with
// exponential backoff and jitter, subscribes again from the last position it saw on each
// filter, and dispatches "recoveryfailed" where the broker could not replay all it missed.
// With getToken (an async function returning a new token), credentials are renewed before
// they expire (a refresh on the open connection) and before reconnecting when the broker
// refused the last ones (an expired token closes with 4001; a refused handshake cannot be
// told apart from an unreachable broker in a browser, so a failed attempt asks too).
// Events: "message", "join", "leave" (detail: what the broker sent), "recoveryfailed"
// (detail: the filter), "subscribed" and "unsubscribed" (detail: {topic, pos?}: a
// subscription the server made or ended), "open", "close" (detail: {code, reason,
// reconnecting}; no reconnecting after 4003, the backend's "do not come back"),
// "refreshfailed" (detail: the error; the broker closes with 4001 at expiry, then the
// client reconnects with a token from getToken).

export class BrokerError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.brokerMessage = message;
  }
}

export class ConnectionLost extends Error {}

// MQTT-style matching, as the broker does: + one level, # the rest (not $ topics at the top).
export function matches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

const SEEN = 10000;
const TOKEN_EXPIRED = 4001;
// The application's backend disconnected this client for good (4002 lets it come back).
const DO_NOT_RECONNECT = 4003;
// A refresh goes out this long before expiry, or at three quarters of a shorter lifetime.
const REFRESH_MARGIN = 30000;
// Binary data travels as data_b64 (standard base64); the application sees a Uint8Array.
function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function withBytes(message) {
  if (!("data_b64" in message)) return message;
  const { data_b64: encoded, ...rest } = message;
  return { ...rest, data: Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)) };
}

const MSGPACK = "trio-broker.msgpack";
const IDEMPOTENT = new Set(["subscribe", "unsubscribe", "history", "presence", "ping"]);

export class Client extends EventTarget {
  constructor(url, { token = null, getToken = null, reconnect = true, backoff = [100, 10000], requestTimeout = 10000, encoding = "json" } = {}) {
    super();
    if (encoding !== "json" && encoding !== "msgpack") {
      throw new TypeError(`encoding must be "json" or "msgpack", not ${JSON.stringify(encoding)}`);
    }
    this.url = url;
    this.encoding = encoding;
    this._codec = null; // MessagePack's encode and decode, loaded by the first connection
    this.token = token;
    this.getToken = getToken;
    this.expiresAt = null; // Unix seconds, when the broker says the credentials expire
    this._refreshTimer = null;
    this._needToken = false; // the broker refused the current token: ask getToken first
    this.reconnect = reconnect;
    this.backoff = backoff;
    this.requestTimeout = requestTimeout;
    this.clientId = null;
    this.positions = new Map(); // filters held: the last position seen
    // Filters the server subscribed this client to: whether it did so again on the current
    // connection (connect-time channels are; the control API's are not).
    this._byServer = new Map();
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id: {request, resolve, reject, timer}
    this._waitingForOpen = [];
    this._delay = backoff[0];
    this._closed = false;
    this._seen = new Set(); // the latest positions delivered
  }

  get connected() {
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN && this.clientId !== null;
  }

  // The first connection: resolves on the broker's welcome, rejects if it cannot be made.
  open() {
    return new Promise((resolve, reject) => { this._connect(resolve, reject).catch(reject); });
  }

  _address() {
    if (!this.token) return this.url;
    const url = new URL(this.url);
    url.searchParams.set("token", this.token); // browsers cannot set headers on a WebSocket
    return url.toString();
  }

  async _connect(resolve, reject) {
    if (this.getToken && (this._needToken || this.token === null)) {
      try {
        this.token = await this.getToken();
        this._needToken = false;
      } catch (error) {
        if (reject) { reject(error); return; }
        this.dispatchEvent(new CustomEvent("refreshfailed", { detail: error }));
        this._retry();
        return;
      }
      if (this._closed) return;
    }
    if (this.encoding === "msgpack" && this._codec === null) {
      this._codec = await import(new URL("./msgpack.mjs", import.meta.url).href);
    }
    const ws = this._codec
      ? new WebSocket(this._address(), [MSGPACK])
      : new WebSocket(this._address());
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let welcomed = false;
    ws.onmessage = (event) => {
      const reply = typeof event.data === "string"
        ? JSON.parse(event.data)
        : this._codec.decode(new Uint8Array(event.data));
      if (!welcomed && reply.op === "welcome") {
        welcomed = true;
        this.clientId = reply.client_id;
        for (const filter of this._byServer.keys()) this._byServer.set(filter, false);
        this._delay = this.backoff[0];
        this._expireAt(reply.expires_at);
        this.dispatchEvent(new CustomEvent("open", { detail: reply }));
        for (const waiter of this._waitingForOpen.splice(0)) waiter.resolve();
        if (resolve) resolve(this);
        else this._subscribeAgain();
        return;
      }
      this._handle(reply);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.clientId = null;
      clearTimeout(this._refreshTimer);
      // The broker refused these credentials, or may have (a handshake that failed).
      if (event.code === TOKEN_EXPIRED || !welcomed) this._needToken = true;
      const lost = new ConnectionLost(`connection closed (${event.code} ${event.reason})`.trim());
      // Without getToken, reconnecting with expired credentials is hopeless.
      const reconnecting = this.reconnect && !this._closed && (welcomed || !reject)
        && event.code !== DO_NOT_RECONNECT
        && (event.code !== TOKEN_EXPIRED || this.getToken !== null);
      for (const [id, entry] of this._pending) {
        clearTimeout(entry.timer);
        this._pending.delete(id);
        // Safe to make again on the next connection; a publish may or may not have happened.
        if (reconnecting && IDEMPOTENT.has(entry.request.op)) {
          this._send(entry.request).then(entry.resolve, entry.reject);
        } else {
          entry.reject(lost);
        }
      }
      this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason, reconnecting } }));
      if (!welcomed && reject) {
        reject(lost);
        return;
      }
      if (reconnecting) {
        this._retry();
      } else {
        for (const waiter of this._waitingForOpen.splice(0)) waiter.reject(lost);
      }
    };
  }

  _retry() {
    const wait = this._delay * (0.5 + Math.random() / 2);
    this._delay = Math.min(this._delay * 2, this.backoff[1]);
    setTimeout(() => { if (!this._closed) this._connect(null, null).catch(() => this._retry()); }, wait);
  }

  _expireAt(expiresAt) {
    clearTimeout(this._refreshTimer);
    this.expiresAt = expiresAt ?? null;
    if (this.expiresAt === null || !this.getToken) return;
    const left = this.expiresAt * 1000 - Date.now();
    const due = Math.max(0, left - Math.min(REFRESH_MARGIN, left / 4));
    this._refreshTimer = setTimeout(() => this._renew(), due);
  }

  async _renew() {
    try {
      await this.refresh(await this.getToken());
    } catch (error) {
      if (!this._closed) this.dispatchEvent(new CustomEvent("refreshfailed", { detail: error }));
    }
  }

  async _subscribeAgain() {
    try {
      await this._send({ op: "ping" }); // answered after the server's connect-time subscriptions
    } catch (error) {
      return;
    }
    for (const [filter, pos] of [...this.positions]) {
      if (this._byServer.get(filter)) continue; // the server made it again
      this._byServer.delete(filter); // now the client's own
      let reply;
      try {
        reply = await this._send(subscribeRequest(filter, pos));
      } catch (error) {
        if (error instanceof BrokerError) {
          this.positions.delete(filter);
          this.dispatchEvent(new CustomEvent("recoveryfailed", { detail: filter }));
        }
        continue;
      }
      if (pos && reply.recovered === false) {
        this.dispatchEvent(new CustomEvent("recoveryfailed", { detail: filter }));
      }
      if (!this.positions.get(filter) && reply.pos) this.positions.set(filter, reply.pos);
    }
  }

  _handle(reply) {
    if (reply.op === "message") {
      if (reply.pos) {
        // Filters that overlap each replay a message after a reconnection: once is enough.
        if (this._seen.has(reply.pos)) return;
        this._seen.add(reply.pos);
        if (this._seen.size > SEEN) this._seen.delete(this._seen.values().next().value);
        for (const filter of this.positions.keys()) {
          if (matches(filter, reply.topic)) this.positions.set(filter, reply.pos);
        }
      }
      this.dispatchEvent(new CustomEvent("message", { detail: withBytes(reply) }));
    } else if (reply.op === "join" || reply.op === "leave") {
      this.dispatchEvent(new CustomEvent(reply.op, { detail: reply }));
    } else if (reply.op === "subscribed" || reply.op === "unsubscribed") {
      // A subscription the server made or ended for this client (docs/protocol.md).
      if (reply.op === "subscribed") {
        this._byServer.set(reply.topic, true);
        this.positions.set(reply.topic, reply.pos || this.positions.get(reply.topic) || null);
      } else {
        this._byServer.delete(reply.topic);
        this.positions.delete(reply.topic);
      }
      this.dispatchEvent(new CustomEvent(reply.op, { detail: reply }));
    } else if (reply.id !== undefined && this._pending.has(reply.id)) {
      const entry = this._pending.get(reply.id);
      this._pending.delete(reply.id);
      clearTimeout(entry.timer);
      if (reply.op === "error") entry.reject(new BrokerError(reply.code, reply.message));
      else entry.resolve(reply);
    }
  }

  async _whenOpen() {
    if (this.connected) return;
    if (this._closed) throw new ConnectionLost("the client was closed");
    await new Promise((resolve, reject) => this._waitingForOpen.push({ resolve, reject }));
  }

  // Send a request (waiting for a connection if the client is reconnecting); its reply.
  async _send(request) {
    await this._whenOpen();
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`no answer to ${request.op} in ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._pending.set(id, { request, resolve, reject, timer });
      this._ws.send(this._encode({ ...request, id }));
    });
  }

  async subscribe(filter, { since = null } = {}) {
    const reply = await this._send(subscribeRequest(filter, since));
    this.positions.set(filter, reply.pos ?? since);
    return { pos: reply.pos ?? null, recovered: reply.recovered ?? null };
  }

  async unsubscribe(filter) {
    this.positions.delete(filter);
    await this._send({ op: "unsubscribe", topic: filter });
  }

  // `data`: any JSON value, or a Uint8Array (binary data: bin in MessagePack, data_b64 in
  // JSON).
  async publish(topic, data) {
    const request = data instanceof Uint8Array && !this._codec
      ? { op: "publish", topic, data_b64: toBase64(data) }
      : { op: "publish", topic, data };
    await this._send(request);
  }

  _encode(request) {
    return this._codec ? this._codec.encode(request) : JSON.stringify(request);
  }

  async history(filter, limit = null) {
    const request = { op: "history", topic: filter };
    if (limit !== null) request.limit = limit;
    return (await this._send(request)).messages.map(withBytes);
  }

  // What was published after the position `since`, the oldest first, a page at a time:
  // { messages, recovered, more, pos }; with `more`, ask again from the last message's pos.
  async historyAfter(filter, since, limit = null) {
    const request = { op: "history", topic: filter, since };
    if (limit !== null) request.limit = limit;
    const { messages, recovered, more, pos } = await this._send(request);
    return { messages: messages.map(withBytes), recovered, more, pos };
  }

  async presence(topic) {
    return (await this._send({ op: "presence", topic })).clients;
  }

  // New credentials for this connection and the next ones; when they expire (Unix seconds).
  async refresh(token) {
    const reply = await this._send({ op: "refresh", token });
    this.token = token;
    this._expireAt(reply.expires_at);
    return this.expiresAt;
  }

  async ping() {
    await this._send({ op: "ping" });
  }

  close() {
    this._closed = true;
    clearTimeout(this._refreshTimer);
    if (this._ws) this._ws.close(1000);
  }
}

function subscribeRequest(filter, since) {
  const request = { op: "subscribe", topic: filter };
  if (since) request.since = since;
  return request;
}
