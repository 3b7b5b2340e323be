"""The demo model's HTTP server: OpenAI's `/v1/models`, `/v1/chat/completions` (streamed as server-sent events when
asked) and `/v1/embeddings`, with OpenAI's error shape. Standard library only: a thread per connection, HTTP/1.1
keep-alive, streams in chunked transfer encoding."""

import base64
import json
import logging
import secrets
import struct
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from marketplace.demo_model import generator

logger = logging.getLogger(__name__)

CHAT, EMBEDDINGS = "chat", "embeddings"
# The models it serves by default: the upstream names of the demo model services (`seed_demo`).
DEMO_MODELS = {
    "qwen2-5-72b-instruct": CHAT,
    "deepseek-v3": CHAT,
    "glm-4-9b-chat": CHAT,
    "bge-m3": EMBEDDINGS,
}
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class DemoModelSettings:
    models: dict[str, str] = field(default_factory=lambda: dict(DEMO_MODELS))  # name → chat or embeddings
    time_to_first_token: float = 0.2  # seconds
    tokens_per_second: float = 40.0  # 0: no pacing
    reply_tokens: int = 48  # a reply's length when max_tokens does not cut it short
    api_key: str = ""  # empty: any bearer token, or none, is accepted


class RequestRefused(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: HTTPStatus, message: str, *, kind: str = "invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


class DemoModelServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], settings: DemoModelSettings | None = None):
        self.settings = settings or DemoModelSettings()
        super().__init__(address, DemoModelHandler)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client dropped a kept-alive connection: routine
            return
        super().handle_error(request, client_address)


class DemoModelHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DemoModel/1.0"
    server: DemoModelServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s " + format, self.address_string(), *args)

    # --- routing ---

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            self._authorize()
            route(self.path.split("?", 1)[0].rstrip("/"))
        except RequestRefused as refused:
            self._send_json(refused.status, refused.body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer

    def _get(self, path: str) -> None:
        settings = self.server.settings
        if path == "/v1/models":
            self._send_json(HTTPStatus.OK, {"object": "list", "data": [self._model(name) for name in settings.models]})
        elif path.startswith("/v1/models/"):
            self._send_json(HTTPStatus.OK, self._model(self._known_model(path.removeprefix("/v1/models/"), None)))
        else:
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"No route for GET {path}.", code="not_found")

    def _post(self, path: str) -> None:
        if path == "/v1/chat/completions":
            self._chat(self._json_body())
        elif path == "/v1/embeddings":
            self._embeddings(self._json_body())
        else:
            self._discard_body()
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"No route for POST {path}.", code="not_found")

    # --- requests ---

    def _authorize(self) -> None:
        expected = self.server.settings.api_key
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if expected and not secrets.compare_digest(given, expected):
            self._discard_body()
            raise RequestRefused(
                HTTPStatus.UNAUTHORIZED,
                "Incorrect API key provided.",
                kind="authentication_error",
                code="invalid_api_key",
            )

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _json_body(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large or unsized.")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError as error:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"The body is not valid JSON: {error}.") from None
        if not isinstance(body, dict):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "The body must be a JSON object.")
        return body

    def _known_model(self, name, modality: str | None) -> str:
        served = self.server.settings.models.get(name) if isinstance(name, str) else None
        if served is None:
            raise RequestRefused(
                HTTPStatus.NOT_FOUND, f"The model `{name}` does not exist.", code="model_not_found", param="model"
            )
        if modality is not None and served != modality:
            raise RequestRefused(
                HTTPStatus.BAD_REQUEST, f"The model `{name}` does not serve {modality}.", param="model"
            )
        return name

    def _model(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": 1767225600, "owned_by": "demo"}

    # --- chat ---

    def _chat(self, body: dict) -> None:
        model = self._known_model(body.get("model"), CHAT)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "`messages` must be a non-empty list of messages.",
                                 param="messages")  # fmt: skip
        if body.get("n", 1) != 1:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "The demo model answers with one choice (n = 1).", param="n")
        settings = self.server.settings
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "`max_tokens` must be a positive integer.", param="max_tokens")
        length = settings.reply_tokens if limit is None else min(limit, settings.reply_tokens)
        finish_reason = "length" if length < settings.reply_tokens else "stop"
        pieces = generator.reply_pieces(messages, limit=length)
        usage = {"prompt_tokens": generator.prompt_tokens(messages), "completion_tokens": length}
        usage["total_tokens"] = usage["prompt_tokens"] + length
        answer = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": model,
                  "system_fingerprint": "demo"}  # fmt: skip
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._chat_stream(answer, pieces, finish_reason, usage if include_usage else None)
            return
        self._pace(length)
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "logprobs": None,
                  "finish_reason": finish_reason}  # fmt: skip
        self._send_json(HTTPStatus.OK, {**answer, "object": "chat.completion", "choices": [choice], "usage": usage})

    def _pace(self, tokens: int) -> None:
        """A whole answer takes as long as its stream would."""
        settings = self.server.settings
        per_token = 1 / settings.tokens_per_second if settings.tokens_per_second else 0
        time.sleep(settings.time_to_first_token + max(tokens - 1, 0) * per_token)

    def _chat_stream(self, answer: dict, pieces, finish_reason: str, usage: dict | None) -> None:
        settings = self.server.settings
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {**answer, "object": "chat.completion.chunk"}

        def event(choices: list, **extra) -> None:
            self._send_chunk(f"data: {json.dumps({**chunk, 'choices': choices, **extra}, ensure_ascii=False)}\n\n")

        time.sleep(settings.time_to_first_token)
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
        for index, piece in enumerate(pieces):
            if index and settings.tokens_per_second:
                time.sleep(1 / settings.tokens_per_second)
            event([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])
        if usage is not None:
            event([], usage=usage)
        self._send_chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _send_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # --- embeddings ---

    def _embeddings(self, body: dict) -> None:
        model = self._known_model(body.get("model"), EMBEDDINGS)
        texts = self._embedding_inputs(body.get("input"))
        dimensions = body.get("dimensions", generator.EMBEDDING_DIMENSIONS)
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 4096:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "`dimensions` must be between 1 and 4096.", param="dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in {"float", "base64"}:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "`encoding_format` is float or base64.",
                                 param="encoding_format")  # fmt: skip
        data = []
        for index, text in enumerate(texts):
            vector = generator.embedding(text, dimensions=dimensions)
            if encoding == "base64":  # little-endian float32, as OpenAI sends it
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(generator.tokens_of(text)) for text in texts)
        self._pace(0)
        self._send_json(HTTPStatus.OK, {"object": "list", "data": data, "model": model,
                                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    @staticmethod
    def _embedding_inputs(value) -> list[str]:
        """A string, a list of strings, or token ids (a list of integers, or a list of such lists): each token id
        counts as one token."""

        def text_of(item) -> str | None:
            if isinstance(item, str):
                return item
            if isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                return " ".join(map(str, item))
            return None

        if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            value = [value]
        items = value if isinstance(value, list) else [value]
        texts = [text_of(item) for item in items]
        if not items or any(text is None or text == "" for text in texts):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "`input` must be non-empty text, a list of texts or token "
                                 "ids.", param="input")  # fmt: skip
        return texts

    # --- answers ---

    def _send_json(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
