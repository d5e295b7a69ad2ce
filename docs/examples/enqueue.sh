#!/bin/sh
# Enqueue one contact card over contactq's socket with curl, print its id, then read
# the message back. tests/examples.rs runs this against a real daemon.
#   CONTACTQ_SOCKET=/run/contactq/contactq.sock sh enqueue.sh
set -eu
S="${CONTACTQ_SOCKET:-/run/contactq/contactq.sock}"
INSTANCE="${CONTACTQ_INSTANCE:-main}"

# 202 and the new message; with the same Idempotency-Key again, 200 and that same
# message instead of a second card. Errors: 4xx/5xx with {"error":…,"detail":…}.
answer=$(curl -sS --fail-with-body --unix-socket "$S" \
    "http://localhost/v1/instances/$INSTANCE/sendContact" \
    -H 'Content-Type: application/json' \
    -H 'Idempotency-Key: example-shell-1' \
    -d '{"chatId":"11001234567@c.us","contact":{"phoneContact":79001234561,"firstName":"Shell"}}')
# {"id":"01J…","state":"queued",…}: the id without needing jq.
id=$(printf '%s' "$answer" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || { echo "no id in: $answer" >&2; exit 1; }
echo "$id"
curl -sS --fail-with-body --unix-socket "$S" "http://localhost/v1/messages/$id"
echo
