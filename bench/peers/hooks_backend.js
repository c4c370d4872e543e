// The application's backend of the http_hooks rows: accepts every hook call at once
// ({"result": {}}), keep-alive, and counts them. Prints {"port": N} when listening.
"use strict";
const http = require("http");

let calls = 0;
const answer = Buffer.from('{"result":{}}');
const server = http.createServer({ keepAliveTimeout: 60000 }, (request, response) => {
  request.resume();
  request.on("end", () => {
    calls += 1;
    if (request.url === "/calls") {
      response.end(JSON.stringify({ calls }));
      return;
    }
    response.writeHead(200, { "Content-Type": "application/json", "Content-Length": answer.length });
    response.end(answer);
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
