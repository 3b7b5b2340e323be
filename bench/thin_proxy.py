"""The gateway bench's Python floor: a thin aiohttp pass-through that checks a bearer key, forwards the request,
passes the answer (or the stream) back, and reads the upstream's usage to count tokens. No database, no limits.
Run: python -m bench.thin_proxy PORT UPSTREAM_URL."""

import json
import re
import sys

from aiohttp import ClientSession, TCPConnector, web

KEY = "Bearer thin-bench-key"
USAGE = re.compile(rb'"usage":\s*(\{[^}]*\})')
counted = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}


def count(usage: dict) -> None:
    counted["requests"] += 1
    counted["prompt_tokens"] += usage.get("prompt_tokens", 0)
    counted["completion_tokens"] += usage.get("completion_tokens", 0)


async def chat(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != KEY:
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    body = await request.read()
    session: ClientSession = request.app["session"]
    async with session.post(request.app["upstream"] + "/chat/completions", data=body,
                            headers={"Content-Type": "application/json"}) as upstream:  # fmt: skip
        if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if match := USAGE.search(chunk):
                    count(json.loads(match.group(1)))
                await response.write(chunk)
            await response.write_eof()
            return response
        raw = await upstream.read()
        count(json.loads(raw).get("usage") or {})
        return web.Response(body=raw, content_type="application/json")


async def counts(request: web.Request) -> web.Response:
    return web.json_response(counted)


async def on_startup(app: web.Application) -> None:
    app["session"] = ClientSession(connector=TCPConnector(limit=1000))


async def on_cleanup(app: web.Application) -> None:
    await app["session"].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    app = web.Application()
    app["upstream"] = upstream
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/counts", counts)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    import uvloop

    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
