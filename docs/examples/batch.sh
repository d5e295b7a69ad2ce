#!/bin/sh
# Enqueue several cards in one request: the body is a JSON array of sendContact bodies
# (at most 16 MiB). The answer is {"messages":[…]}, in the order sent.
# tests/examples.rs runs this against a real daemon.
#   CONTACTQ_SOCKET=/run/contactq/contactq.sock sh batch.sh
set -eu
S="${CONTACTQ_SOCKET:-/run/contactq/contactq.sock}"
INSTANCE="${CONTACTQ_INSTANCE:-main}"

curl -sS --fail-with-body --unix-socket "$S" \
    "http://localhost/v1/instances/$INSTANCE/sendContact:batch" \
    -H 'Content-Type: application/json' \
    -d '[{"chatId":"11001234567@c.us","contact":{"phoneContact":79001234562,"firstName":"Batch-1"}},
         {"chatId":"11001234567@c.us","contact":{"phoneContact":79001234563,"firstName":"Batch-2","company":"Example"}}]'
echo
