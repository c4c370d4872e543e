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
"use strict";
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

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const now = () => performance.now(); // ms, sub-µs resolution, same clock in every socket

function open(url, localAddress = undefined) {
  return new Promise((resolve, reject) => {
    // wss:// rows use a certificate made for the run: not checked, as for Node's broker.
    const ws = new WebSocket(url, {
      perMessageDeflate: false, skipUTF8Validation: true, localAddress, rejectUnauthorized: false,
    });
    ws.once("message", () => resolve(ws)); // the welcome
    ws.once("error", reject);
  });
}

function request(ws, obj) {
  return new Promise((resolve) => {
    ws.once("message", resolve);
    ws.send(JSON.stringify(obj));
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
  let lost = 0;
  let reordered = 0;
  const publishedPerTopic = new Array(topicCount).fill(0);
  const receivedBy = new Array(subscriberCount).fill(0);
  const lastSeq = new Array(subscriberCount).fill(-1);
  let pump = () => {};

  const subscribers = await openMany(subscriberCount, async (ws, i) => {
    await request(ws, { op: "subscribe", topic: topicOf(i), id: 1 });
    ws.on("message", (data) => {
      // {"op":"message","topic":"bench/0","data":"SEQ|SENT_MS|padding"}
      const text = data.toString("latin1");
      const start = text.indexOf('"data":"') + 8;
      const bar = text.indexOf("|", start);
      const seq = +text.slice(start, bar);
      const sent = +text.slice(bar + 1, text.indexOf("|", bar + 1));
      if (seq <= lastSeq[i] && !membersPublish) reordered++;
      lastSeq[i] = seq;
      receivedBy[i]++;
      received++;
      if (measuring) {
        receivedInWindow++;
        const micros = Math.round((now() - sent) * 1000);
        histogram[Math.min(micros, histogram.length - 1)]++;
        if (micros > maxLatency) maxLatency = micros;
      }
      pump();
    });
  });
  const publisher = await open(publishUrl);
  const perTopic = subscriberCount / topicCount;
  const padding = "x".repeat(Math.max(0, payloadSize - 24));
  let seq = 0;
  let publishedDeliveries = 0;
  let stopped = false;
  const publish = () => {
    const topic = seq % topicCount;
    const data = `${seq}|${now().toFixed(3)}|${padding}`.slice(0, Math.max(payloadSize, 24));
    const sender = membersPublish ? subscribers[seq % subscriberCount] : publisher;
    sender.send(`{"op":"publish","topic":"bench/${topic}","data":"${data}"}`);
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

  await new Promise((r) => setTimeout(r, warmup));
  measuring = true;
  const windowStart = now();
  emit({ event: "start" });
  await new Promise((r) => setTimeout(r, duration));
  measuring = false;
  const windowSeconds = (now() - windowStart) / 1000;
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
    const target = Math.ceil(receivedInWindow * p);
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
    },
  });
  for (const ws of [...subscribers, publisher]) ws.terminate();
  process.exit(0);
}

({ idle, storm }[mode] ?? load)().catch((error) => {
  emit({ error: String(error) });
  process.exit(1);
});
