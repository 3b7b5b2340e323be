"""The gateway bench's upstream: raw ASGI (run under uvicorn + uvloop), canned OpenAI answers with `usage`, an SSE
stream ending in a usage chunk, an optional fixed delay (FAKE_UPSTREAM_DELAY_MS), and what it served per model at
GET /counts, so the bench can check that every proxy metered exactly what the upstream reported."""

import asyncio
import json
import os

DELAY = int(os.environ.get("FAKE_UPSTREAM_DELAY_MS", "0")) / 1000
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 8
PIECES = ["Hello", " from", " the", " fake", " upstream", ",", " eight", " tokens"]
USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
         "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}  # fmt: skip
served: dict[str, dict[str, int]] = {}


def _completion(model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(PIECES)}
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": USAGE,
    }).encode()  # fmt: skip


def _chunk(model: str, delta: dict, *, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": choices, "usage": usage}  # fmt: skip
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/counts":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(served).encode()})
        return
    request = json.loads(await _body(receive))
    model = request.get("model", "")
    if DELAY:
        await asyncio.sleep(DELAY)
    counts = served.setdefault(model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
    counts["requests"] += 1
    counts["prompt_tokens"] += PROMPT_TOKENS
    counts["completion_tokens"] += COMPLETION_TOKENS
    if not request.get("stream"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _completion(model)})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    events += [_chunk(model, {"content": piece}) for piece in PIECES]
    events.append(_chunk(model, {}, finish="stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append(_chunk(model, {}, usage=USAGE))
    events.append(b"data: [DONE]\n\n")
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
