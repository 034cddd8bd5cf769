"""An SMS gateway that accepts everything (200), remembers the last code sent to a phone, and
counts what it was sent."""

from __future__ import annotations

import json
import re
import sys

from aiohttp import web

CODES: dict[str, str] = {}
RECEIVED = [0]


async def accept(request: web.Request) -> web.Response:
    RECEIVED[0] += 1
    body = await request.json()
    found = re.search(r"\d{4,10}", body.get("text", ""))
    if found:
        CODES[body["phone"]] = found.group(0)
    return web.Response(status=200)


async def codes(_request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(CODES), content_type="application/json")


async def received(_request: web.Request) -> web.Response:
    return web.Response(text=str(RECEIVED[0]))


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/sms", accept)
    app.router.add_get("/codes", codes)
    app.router.add_get("/received", received)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
