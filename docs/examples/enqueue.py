#!/usr/bin/env python3
"""Enqueue one contact card over contactq's Unix socket with Python's standard library
(http.client over AF_UNIX), print its id, then read the message back.
tests/examples.rs runs this against a real daemon.

    CONTACTQ_SOCKET=/run/contactq/contactq.sock python3 enqueue.py
"""
import http.client
import json
import os
import socket
import sys

SOCKET = os.environ.get("CONTACTQ_SOCKET", "/run/contactq/contactq.sock")
INSTANCE = os.environ.get("CONTACTQ_INSTANCE", "main")


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 to a Unix stream socket; the host name only fills the Host header."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(method, path, body=None, headers=None):
    conn = UnixHTTPConnection(SOCKET)
    try:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        answer = json.loads(response.read() or b"null")
        return response.status, answer
    finally:
        conn.close()


def main():
    card = {
        "chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234564, "firstName": "Python"},
    }
    # 202 and the new message; the same Idempotency-Key again answers 200 with it.
    status, answer = call(
        "POST",
        f"/v1/instances/{INSTANCE}/sendContact",
        card,
        {"Idempotency-Key": "example-python-1"},
    )
    if status not in (200, 202):
        # Errors are {"error": ..., "detail": ...}, as the daemon's docs/api.md says.
        print(f"enqueue failed ({status}): {answer}", file=sys.stderr)
        return 1
    print(answer["id"])
    status, message = call("GET", f"/v1/messages/{answer['id']}")
    print(json.dumps(message))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
