"""Drives the contactq sandbox with the official Green API Python SDK.

Usage: python3 tests/sdk/check_sdk.py http://127.0.0.1:PORT

Run by tests/sandbox_sdk.rs. The sandbox enforces the real per-second limits
(1 request per second for getStateInstance, getSettings, lastOutgoingMessages and
showMessagesQueue), so repeated calls of one method sleep 1.1 s in between.
"""

import sys
import time

from whatsapp_api_client_python import API

ID_INSTANCE = "1101000001"
CHAT_ID = "11001234567@c.us"
CONTACT = {
    "phoneContact": 79001234568,
    "firstName": "Artem",
    "middleName": "Petrovich",
    "lastName": "Evpatoriysky",
    "company": "Bicycle",
}

checks = 0


def check(condition, what, response=None):
    global checks
    if not condition:
        detail = ""
        if response is not None:
            detail = f" (code={response.code}, data={response.data}, error={response.error})"
        print(f"FAILED: {what}{detail}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def main(url):
    green_api = API.GreenAPI(ID_INSTANCE, "token", host=url)

    state = green_api.account.getStateInstance()
    check(state.code == 200, "getStateInstance answers 200", state)
    check(state.data == {"stateInstance": "authorized"}, "stateInstance is authorized", state)

    settings = green_api.account.getSettings()
    check(settings.code == 200, "getSettings answers 200", settings)
    check(settings.data["wid"] == f"{ID_INSTANCE}@c.us", "getSettings has the wid", settings)
    check("delaySendMessagesMilliseconds" in settings.data, "getSettings has the delay", settings)

    sent = green_api.sending.sendContact(CHAT_ID, CONTACT)
    check(sent.code == 200, "sendContact answers 200", sent)
    id_message = sent.data.get("idMessage", "")
    check(len(id_message) == 20, "sendContact returns a 20-character idMessage", sent)

    # The SDK's own example passes the phone as a string of digits.
    quoted = green_api.sending.sendContact(
        CHAT_ID, {"phoneContact": "79001234569", "firstName": "Ivan"},
        quotedMessageId=id_message,
    )
    check(quoted.code == 200, "sendContact with a string phone and a quote answers 200", quoted)

    bad = green_api.sending.sendContact("not-a-chat", CONTACT)
    check(bad.code == 400, "an invalid chatId answers 400", bad)
    check("Validation failed" in (bad.error or ""), "the 400 says why", bad)

    journal = green_api.journals.lastOutgoingMessages()
    check(journal.code == 200, "lastOutgoingMessages answers 200", journal)
    ours = [m for m in journal.data if m.get("idMessage") == id_message]
    check(len(ours) == 1, "lastOutgoingMessages lists the sent card", journal)
    entry = ours[0]
    check(entry["typeMessage"] == "contactMessage", "the entry is a contactMessage", journal)
    check(entry["chatId"] == CHAT_ID, "the entry has the chatId", journal)
    check("waid=79001234568" in entry["contact"]["vcard"], "the vCard has the phone", journal)
    check(journal.data[0]["idMessage"] == quoted.data["idMessage"], "newest first", journal)

    queue = green_api.queues.showMessagesQueue()
    check(queue.code == 200 and queue.data == [], "showMessagesQueue is empty", queue)

    time.sleep(1.1)  # getStateInstance: 1 request per second
    again = green_api.account.getStateInstance()
    check(again.code == 200, "getStateInstance answers again after a second", again)

    print(f"sdk check: {checks} passed, 0 failed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: check_sdk.py SANDBOX_URL", file=sys.stderr)
        sys.exit(64)
    main(sys.argv[1])
