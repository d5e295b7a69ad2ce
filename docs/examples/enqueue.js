#!/usr/bin/env node
// Enqueue one contact card over contactq's Unix socket with Node's standard library
// (http.request with socketPath), print its id, then read the message back.
// tests/examples.rs runs this against a real daemon.
//   CONTACTQ_SOCKET=/run/contactq/contactq.sock node enqueue.js
"use strict";
const http = require("http");

const socketPath = process.env.CONTACTQ_SOCKET || "/run/contactq/contactq.sock";
const instance = process.env.CONTACTQ_INSTANCE || "main";

function call(method, path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        path,
        method,
        headers: {
          "Content-Type": "application/json",
          ...(data === undefined ? {} : { "Content-Length": Buffer.byteLength(data) }),
          ...headers,
        },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => {
          try {
            resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null });
          } catch (e) {
            reject(new Error(`not JSON (${res.statusCode}): ${text}`));
          }
        });
      },
    );
    req.on("error", reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

async function main() {
  const card = {
    chatId: "11001234567@c.us",
    contact: { phoneContact: 79001234565, firstName: "Node" },
  };
  // 202 and the new message; the same Idempotency-Key again answers 200 with it.
  const sent = await call("POST", `/v1/instances/${instance}/sendContact`, card, {
    "Idempotency-Key": "example-node-1",
  });
  if (sent.status !== 200 && sent.status !== 202) {
    throw new Error(`enqueue failed (${sent.status}): ${JSON.stringify(sent.body)}`);
  }
  console.log(sent.body.id);
  const message = await call("GET", `/v1/messages/${sent.body.id}`);
  if (message.status !== 200) throw new Error(`GET failed (${message.status})`);
  console.log(JSON.stringify(message.body));
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
