// Load generator for bench/run.py: S subscribers and one publisher against a broker that
// speaks trio-broker's protocol. Written in Node so that it is never the bottleneck of a
// Python broker. Prints JSON lines: {"event":"start"}, {"event":"end"} around the measured
// window (run.py samples the broker's CPU time there), then {"result":{...}}.
//
//   node loadgen.js --url ws://127.0.0.1:PORT/ws --subscribers 100 --mode saturate
//   --url may list several brokers (comma-separated): subscriber i connects to the
//   (i mod n)th, the publisher to --publish-url (default: the first).
//   modes: saturate (keep --inflight deliveries outstanding), rate (--rate deliveries/s),
//          idle (open --subscribers connections, print {"event":"ready"}, wait for stdin EOF),
//          --members-publish 1: the subscribers publish, in turn, instead of one publisher (a
//          chat room where everyone talks; order across senders is not checked then),
//          storm (--subscribers clients connect and subscribe, --inflight at a time, from
//          --addresses source addresses 127.0.0.2...: how long until all are subscribed)
//   --deflate 1: every subscriber offers permessage-deflate (as browsers do), and the result
//   says how many bytes the subscribers read from their sockets per delivery. Inflating
//   every delivery would make this generator the bottleneck (ws inflates asynchronously,
//   tens of µs a message): one subscriber in a hundred reads raw frames, inflates them
//   synchronously and checks order and latency; the others count raw frames (and lost ones);
//   --chat 1: the payload's padding is chat-like text (words), not one repeated letter.
"use strict";
const crypto = require("crypto");
const net = require("net");
const zlib = require("zlib");
const WebSocket = require("ws");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, [])
);
const urls = args.url.split(",");
const publishUrl = args["publish-url"] ?? urls[0];
const subscriberCount = +(args.subscribers ?? 100);
const topicCount = +(args.topics ?? 1);
const mode = args.mode ?? "saturate";
const rate = +(args.rate ?? 20000);
const warmup = +(args.warmup ?? 1) * 1000;
const duration = +(args.duration ?? 5) * 1000;
const payloadSize = +(args.payload ?? 100);
const inflight = +(args.inflight ?? 10000);
const drainLimit = 10000;
const membersPublish = args["members-publish"] === "1";
const deflate = args.deflate === "1";
// --msgpack 1: every client speaks trio-broker.msgpack (MessagePack in binary frames).
const packed = args.msgpack === "1";
// --counting 1 (implied by --deflate): one subscriber in CHECKING decodes and checks order
// and latency; the others count raw frames (and the bytes read), decoding nothing.
const counting = deflate || args.counting === "1";
const CHECKING = 100;
const SUBPROTOCOL = "trio-broker.msgpack";
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const OFFER = "permessage-deflate; client_max_window_bits"; // a browser's
// The checking subscriber inflates each message alone (synchronously): it asks every
// broker, Node's ws too, to compress each alone for it.
const CHECKER_OFFER = "permessage-deflate; server_no_context_takeover; client_max_window_bits";
// --sse 1: the subscribers read Server-Sent Events streams (GET /sse?topic=...) instead of
// WebSockets (with --counting, most count events without parsing them).
const sse = args.sse === "1";
const { encode, decode } = packed ? require("@msgpack/msgpack") : {};
const encodeRequest = packed ? (obj) => encode(obj) : (obj) => JSON.stringify(obj);
const chat = args.chat === "1";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const now = () => performance.now(); // ms, sub-µs resolution, same clock in every socket

function open(url, localAddress = undefined, offerDeflate = deflate) {
  return new Promise((resolve, reject) => {
    // wss:// rows use a certificate made for the run: not checked, as for Node's broker.
    const ws = new WebSocket(url, packed ? [SUBPROTOCOL] : [], {
      perMessageDeflate: offerDeflate, skipUTF8Validation: true, localAddress,
      rejectUnauthorized: false,
    });
    ws.once("message", () => resolve(ws)); // the welcome
    ws.once("error", reject);
  });
}

function request(ws, obj) {
  return new Promise((resolve) => {
    ws.once("message", resolve);
    ws.send(encodeRequest(obj));
  });
}

async function openMany(count, setup) {
  const sockets = [];
  for (let start = 0; start < count; start += 200) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + 200); i++) {
      batch.push(open(urls[i % urls.length]).then(async (ws) => { await setup(ws, i); return ws; }));
    }
    sockets.push(...(await Promise.all(batch)));
  }
  return sockets;
}

const topicOf = (i) => `bench/${i % topicCount}`;

// A subscriber that offers permessage-deflate and counts the messages it gets without
// inflating them: a socket, the upgrade by hand, frame headers only.
// With ``onPayload``, it reads whole frames instead and hands each message's payload over,
// inflated (synchronously: cheap for one subscriber) when the broker compressed it.
function openCounting(url, topic, onMessage, onPayload = null) {
  const { hostname, port, pathname } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(+port, hostname);
    socket.setNoDelay(true);
    let buffer = Buffer.alloc(0);
    let stage = "upgrade"; // then "welcome", "ack", "counting"
    const counter = { bytesRead: 0, socket };
    socket.on("error", reject);
    socket.on("connect", () => {
      socket.write(
        `GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
        `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\n` +
        (deflate ? `Sec-WebSocket-Extensions: ${onPayload ? CHECKER_OFFER : OFFER}\r\n` : "") +
        (packed ? `Sec-WebSocket-Protocol: ${SUBPROTOCOL}\r\n` : "") + "\r\n");
    });
    // Counting reads frame headers only: a payload is skipped as it comes, never copied.
    let skip = 0;
    let pending = null; // a header cut by the end of a read
    const count = (data) => {
      if (pending) { data = Buffer.concat([pending, data]); pending = null; }
      let at = 0;
      while (at < data.length) {
        if (skip) { const n = Math.min(skip, data.length - at); skip -= n; at += n; continue; }
        const left = data.length - at;
        let length = left >= 2 ? data[at + 1] & 0x7f : 0, head = 2;
        if (length === 126) head = 4; else if (length === 127) head = 10;
        if (left < head) { pending = Buffer.from(data.subarray(at)); return; }
        if (head === 4) length = data.readUInt16BE(at + 2);
        else if (head === 10) length = Number(data.readBigUInt64BE(at + 2));
        if ((data[at] & 0x80) && (data[at] & 0x0f) < 8) onMessage();
        at += head;
        skip = length;
      }
    };
    let whole = Buffer.alloc(0); // with onPayload: what is not a complete frame yet
    const parse = (data) => {
      whole = whole.length ? Buffer.concat([whole, data]) : data;
      let at = 0;
      while (whole.length - at >= 2) {
        let length = whole[at + 1] & 0x7f, head = 2;
        if (length === 126) { if (whole.length - at < 4) break; length = whole.readUInt16BE(at + 2); head = 4; }
        else if (length === 127) { if (whole.length - at < 10) break; length = Number(whole.readBigUInt64BE(at + 2)); head = 10; }
        if (whole.length - at < head + length) break;
        const first = whole[at];
        let payload = whole.subarray(at + head, at + head + length);
        at += head + length;
        if ((first & 0x0f) >= 8) continue; // a ping: not a delivery
        if (first & 0x40) {
          const deflated = Buffer.concat([payload, DEFLATE_TAIL]);
          // A message ends with a sync flush, not a final block: no "end of file" to wait
          // for. Each stands alone: this subscriber asks for server_no_context_takeover.
          payload = zlib.inflateRawSync(deflated, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
        }
        onPayload(payload);
      }
      whole = whole.subarray(at);
    };
    socket.on("data", (data) => {
      counter.bytesRead += data.length;
      if (stage === "counting") return onPayload ? parse(data) : count(data);
      buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
      if (stage === "upgrade") {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        if (!buffer.slice(0, 12).toString().includes("101")) return reject(new Error("refused"));
        buffer = buffer.slice(end + 4);
        stage = "welcome";
      }
      let at = 0;
      while (buffer.length - at >= 2) {
        let length = buffer[at + 1] & 0x7f, head = 2;
        if (length === 126) { if (buffer.length - at < 4) break; length = buffer.readUInt16BE(at + 2); head = 4; }
        else if (length === 127) { if (buffer.length - at < 10) break; length = Number(buffer.readBigUInt64BE(at + 2)); head = 10; }
        if (buffer.length - at < head + length) break;
        at += head + length;
        if (stage === "welcome") {
          stage = "ack";
          socket.write(masked(encodeRequest({ op: "subscribe", topic, id: 1 })));
        } else if (stage === "ack") {
          stage = "counting";
          resolve(counter);
          (onPayload ? parse : count)(buffer.subarray(at));
          buffer = Buffer.alloc(0);
          return;
        }
      }
      buffer = buffer.slice(at);
    });
  });
}

// A subscriber on an event stream: the GET by hand, then ``onEvent(text)`` per event
// (``text`` null when only counting: the event separators are counted, natively).
function openStream(url, topic, onEvent, parse) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(+port, hostname);
    socket.setNoDelay(true);
    const reader = { bytesRead: 0, socket };
    const separator = Buffer.from("\n\n");
    let head = Buffer.alloc(0);
    let text = "";
    let endedWithNewline = false;
    socket.on("error", reject);
    socket.on("connect", () => socket.write(
      `GET /sse?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`));
    socket.on("data", (data) => {
      reader.bytesRead += data.length;
      if (head !== null) {
        head = Buffer.concat([head, data]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        if (!head.slice(0, 12).toString().includes("200")) return reject(new Error("refused"));
        data = head.slice(end + 4);
        head = null;
        resolve(reader);
      }
      if (parse) {
        text += data.toString("latin1");
        let end;
        while ((end = text.indexOf("\n\n")) >= 0) {
          const event = text.slice(0, end);
          text = text.slice(end + 2);
          if (event.includes("event: message")) onEvent(event);
        }
        return;
      }
      if (endedWithNewline && data[0] === 0x0a) onEvent(null);
      for (let at = data.indexOf(separator); at >= 0; at = data.indexOf(separator, at + 2)) {
        onEvent(null);
      }
      endedWithNewline = data.length > 0 && data[data.length - 1] === 0x0a;
    });
  });
}

function masked(message) {
  const payload = Buffer.from(message); // text: a string; binary: a Uint8Array
  const first = typeof message === "string" ? 0x81 : 0x82;
  const head = payload.length < 126 ? Buffer.from([first, 0x80 | payload.length])
    : Buffer.from([first, 0x80 | 126, payload.length >> 8, payload.length & 255]);
  return Buffer.concat([head, Buffer.alloc(4), payload]); // a zero mask leaves it as is
}

// Chat-like text of `size` characters: words of a small vocabulary in a fixed pseudo-random
// order (16 variants), so that it compresses as a conversation does, not as "xxxx" would.
function chatTexts(size) {
  const words = ("hey hi hello so did you see the game last night it was great what about " +
    "lunch tomorrow sure sounds good I will be there at noon can we move the meeting to " +
    "three ok thanks see you later lol yes no maybe haha nice one who is coming alice bob " +
    "carol dave eve frank grace heidi the new release is out check the changelog please " +
    "merge my pull request when you have a minute coffee anyone").split(" ");
  let state = 12345;
  const random = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: 16 }, () => {
    let text = "";
    while (text.length < size) text += words[Math.floor(random() * words.length)] + " ";
    return text.slice(0, size);
  });
}

async function idle() {
  const sockets = await openMany(subscriberCount, (ws, i) =>
    request(ws, { op: "subscribe", topic: `idle/${i}`, id: 1 }));
  emit({ event: "ready", connections: sockets.length });
  process.stdin.resume();
  process.stdin.on("end", () => { for (const ws of sockets) ws.terminate(); process.exit(0); });
}

async function storm() {
  const addresses = +(args.addresses ?? 200);
  const concurrency = +(args.inflight ?? 500);
  const sockets = [];
  let next = 0;
  const source = (i) => { const n = 2 + (i % addresses); return `127.0.${n >> 8}.${n & 255}`; };
  const client = async () => {
    while (next < subscriberCount) {
      const i = next++;
      const ws = await open(urls[i % urls.length], source(i));
      await request(ws, { op: "subscribe", topic: `storm/${i}`, id: 1 });
      sockets.push(ws);
    }
  };
  emit({ event: "start" });
  const began = now();
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = (now() - began) / 1000;
  emit({ event: "end" });
  emit({ result: { storm_seconds: seconds, connections: sockets.length } });
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

async function load() {
  // Latency histogram in µs up to 2 s; the exact max is kept beside it.
  const histogram = new Uint32Array(2_000_000);
  let maxLatency = 0;
  let measuring = false;
  let received = 0;
  let receivedInWindow = 0;
  let sampled = 0; // deliveries whose latency was measured (every one, but with --deflate)
  let lost = 0;
  let reordered = 0;
  const publishedPerTopic = new Array(topicCount).fill(0);
  const receivedBy = new Array(subscriberCount).fill(0);
  const lastSeq = new Array(subscriberCount).fill(-1);
  let pump = () => {};

  const counted = (i) => () => {
    receivedBy[i]++;
    received++;
    if (measuring) receivedInWindow++;
    pump();
  };
  // A delivery whose data (SEQ|SENT_MS|padding) starts at ``start`` in ``text``.
  const checkedAt = (i, text, start) => {
    const bar = text.indexOf("|", start);
    const seq = +text.slice(start, bar);
    const sent = +text.slice(bar + 1, text.indexOf("|", bar + 1));
    if (seq <= lastSeq[i] && !membersPublish) reordered++;
    lastSeq[i] = seq;
    receivedBy[i]++;
    received++;
    if (measuring) {
      receivedInWindow++;
      sampled++;
      const micros = Math.round((now() - sent) * 1000);
      histogram[Math.min(micros, histogram.length - 1)]++;
      if (micros > maxLatency) maxLatency = micros;
    }
    pump();
  };
  // An event stream's event: data: {"topic":"bench/0","data":"SEQ|SENT_MS|padding"}
  const checked = (i, event) => checkedAt(i, event, event.indexOf('"data":"') + 8);
  const counters = []; // raw subscribers that count (never the global flag `counting`)
  const streams = [];
  if (sse) {
    for (let i = 0; i < subscriberCount; i++) {
      const checker = !counting || i % CHECKING === 0;
      const onEvent = checker ? (event) => checked(i, event) : () => counted(i)();
      streams.push(await openStream(urls[i % urls.length], topicOf(i), onEvent, checker));
    }
    await new Promise((r) => setTimeout(r, 1000)); // no ack on a stream: let it subscribe
  } else if (counting) {
    for (let i = 0; i < subscriberCount; i++) {
      const url = urls[i % urls.length];
      if (i % CHECKING) counters.push(await openCounting(url, topicOf(i), counted(i)));
      else if (deflate) {
        // The checker reads raw too: ws inflates on its thread pool, tens of µs a message.
        const onPayload = (payload) => {
          const text = payload.toString("latin1");
          checkedAt(i, text, text.indexOf('"data":"') + 8);
        };
        counters.push(await openCounting(url, topicOf(i), null, onPayload));
      }
    }
  }
  const checking = sse || deflate ? 0 : counting ? Math.ceil(subscriberCount / CHECKING) : subscriberCount;
  const subscribers = await openMany(checking, async (ws, j) => {
    const i = counting ? j * CHECKING : j;
    await request(ws, { op: "subscribe", topic: topicOf(i), id: 1 });
    ws.on("message", (data) => {
      // {"op":"message","topic":"bench/0","data":"SEQ|SENT_MS|padding"}
      const text = packed ? decode(data).data : data.toString("latin1");
      checkedAt(i, text, packed ? 0 : text.indexOf('"data":"') + 8);
    });
  });
  // The publisher sends uncompressed even with --deflate: compressing every publish on
  // Node's thread pool made this generator the bottleneck; deliveries are what is measured.
  const publisher = await open(publishUrl, undefined, false);
  const perTopic = subscriberCount / topicCount;
  const paddings = chat ? chatTexts(Math.max(0, payloadSize - 24)) : ["x".repeat(Math.max(0, payloadSize - 24))];
  let seq = 0;
  let publishedDeliveries = 0;
  let stopped = false;
  const publish = () => {
    const topic = seq % topicCount;
    const padding = paddings[seq % paddings.length];
    const data = `${seq}|${now().toFixed(3)}|${padding}`.slice(0, Math.max(payloadSize, 24));
    const sender = membersPublish ? subscribers[seq % subscriberCount] : publisher;
    sender.send(packed
      ? encode({ op: "publish", topic: `bench/${topic}`, data })
      : `{"op":"publish","topic":"bench/${topic}","data":"${data}"}`);
    publishedPerTopic[topic]++;
    publishedDeliveries += perTopic;
    seq++;
  };

  let timer = null;
  if (mode === "saturate") {
    let pumping = false;
    pump = () => {
      if (pumping || stopped) return;
      pumping = true;
      while (!stopped && publishedDeliveries - received < inflight) publish();
      pumping = false;
    };
    pump();
  } else {
    const messagesPerMs = rate / perTopic / 1000;
    const began = now();
    timer = setInterval(() => {
      const due = Math.floor((now() - began) * messagesPerMs);
      while (seq < due && !stopped) publish();
    }, 1);
  }

  const bytesRead = () => [...subscribers.map((ws) => ws._socket), ...counters, ...streams]
    .reduce((sum, reader) => sum + reader.bytesRead, 0);
  await new Promise((r) => setTimeout(r, warmup));
  measuring = true;
  const windowStart = now();
  const bytesAtStart = bytesRead();
  emit({ event: "start" });
  await new Promise((r) => setTimeout(r, duration));
  measuring = false;
  const windowSeconds = (now() - windowStart) / 1000;
  const wireBytes = bytesRead() - bytesAtStart;
  emit({ event: "end" });
  stopped = true;
  if (timer) clearInterval(timer);

  // Drain: wait until every published message arrived, or give up.
  const drainStart = now();
  while (received < publishedDeliveries && now() - drainStart < drainLimit) {
    await new Promise((r) => setTimeout(r, 20));
  }
  for (let i = 0; i < subscriberCount; i++) {
    lost += Math.max(0, publishedPerTopic[i % topicCount] - receivedBy[i]);
  }
  const percentile = (p) => {
    const target = Math.ceil(sampled * p);
    let seen = 0;
    for (let us = 0; us < histogram.length; us++) {
      seen += histogram[us];
      if (seen >= target) return us;
    }
    return maxLatency;
  };
  emit({
    result: {
      deliveries_per_s: receivedInWindow / windowSeconds,
      p50_us: percentile(0.5),
      p99_us: percentile(0.99),
      max_us: maxLatency,
      published: seq,
      delivered: received,
      lost,
      reordered,
      ...(counting ? { wire_bytes_per_delivery: wireBytes / Math.max(1, receivedInWindow) } : {}),
    },
  });
  for (const ws of [...subscribers, publisher]) ws.terminate();
  for (const reader of [...counters, ...streams]) reader.socket.destroy();
  process.exit(0);
}

({ idle, storm }[mode] ?? load)().catch((error) => {
  emit({ error: String(error) });
  process.exit(1);
});
