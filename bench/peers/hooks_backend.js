// The application's backend of the http_hooks and webhooks rows: accepts every hook call
// at once ({"result": {}}), keep-alive, and counts them; counts the webhook events posted
// to /events. GET /calls answers {"calls", "events"}. Prints {"port": N} when listening.
"use strict";
const http = require("http");

let calls = 0;
let events = 0;
const answer = Buffer.from('{"result":{}}');
const server = http.createServer({ keepAliveTimeout: 60000 }, (request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    if (request.url === "/calls") {
      response.end(JSON.stringify({ calls, events }));
      return;
    }
    calls += 1;
    if (request.url === "/events") {
      events += JSON.parse(Buffer.concat(chunks)).events.length;
    }
    response.writeHead(200, { "Content-Type": "application/json", "Content-Length": answer.length });
    response.end(answer);
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
