// Baseline: the obvious Node `ws` broker, exact topics only, speaking trio-broker's protocol.
"use strict";
// With TLS_CERT and TLS_KEY (PEM files) in the environment it serves wss:// instead.
const fs = require("fs");
const https = require("https");
const { WebSocketServer } = require("ws");

// With PER_MESSAGE_DEFLATE=1 it compresses as trio-broker's [server] compression does
// (zlib level 1, messages of 256 bytes and more), with ws's own per-connection contexts.
const perMessageDeflate = process.env.PER_MESSAGE_DEFLATE === "1"
  ? { threshold: 256, zlibDeflateOptions: { level: 1 } }
  : false;
const tls = process.env.TLS_CERT
  ? https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) })
  : null;
const wss = tls
  ? new WebSocketServer({ server: tls, path: "/ws", perMessageDeflate })
  : new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/ws", perMessageDeflate });
const topics = new Map();

wss.on("connection", (ws) => {
  const subscriptions = new Set();
  const reply = (obj) => ws.send(JSON.stringify(obj));
  reply({ op: "welcome", client_id: "node", server: "node-ws-baseline" });
  ws.on("message", (raw) => {
    let m;
    try { m = JSON.parse(raw); } catch { return; }
    if (m.op === "subscribe") {
      let subscribers = topics.get(m.topic);
      if (!subscribers) topics.set(m.topic, (subscribers = new Set()));
      subscribers.add(ws);
      subscriptions.add(m.topic);
      if (m.id !== undefined) reply({ op: "ack", id: m.id });
    } else if (m.op === "publish") {
      const out = JSON.stringify({ op: "message", topic: m.topic, data: m.data });
      const subscribers = topics.get(m.topic);
      if (subscribers) for (const s of subscribers) s.send(out);
      if (m.id !== undefined) reply({ op: "ack", id: m.id });
    } else if (m.op === "ping") {
      reply({ op: "pong", id: m.id });
    }
  });
  ws.on("close", () => { for (const t of subscriptions) topics.get(t)?.delete(ws); });
});
if (tls) tls.listen(0, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${tls.address().port}`));
else wss.on("listening", () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
