// Node's `ws` with perMessageDeflate against the broker (tests/node/test_compression_peers.py):
// subscribes, publishes a large message (ws compresses it), reads it back (compressed by the
// broker), and prints what was agreed and received as one JSON line.
"use strict";
const WebSocket = require("ws");

const [url, text] = process.argv.slice(2);
const ws = new WebSocket(url, { perMessageDeflate: true });
let compressedIn = null;
ws.on("message", (data, isBinary) => {
  const message = JSON.parse(data.toString());
  if (message.op === "welcome") {
    ws.send(JSON.stringify({ op: "subscribe", topic: "chat", id: 1 }));
  } else if (message.op === "ack" && message.id === 1) {
    ws.send(JSON.stringify({ op: "publish", topic: "chat", data: text, id: 2 }));
  } else if (message.op === "message") {
    const agreed = ws._extensions["permessage-deflate"];
    process.stdout.write(
      JSON.stringify({
        extensions: ws.extensions,
        params: agreed ? agreed.params : null,
        data: message.data,
        bytesRead: ws._socket.bytesRead,
      }) + "\n",
    );
    ws.close(1000);
  }
});
ws.on("error", (error) => {
  process.stdout.write(JSON.stringify({ error: String(error) }) + "\n");
  process.exit(1);
});
