"""The OpenAI-compatible gateway at /v1/: an ASGI application of its own, so that a call in flight holds no worker.

A call: the key (cached per worker) and its scope; the model routed to a service the caller may use; the rate
limits; the worst case (input bound + max_tokens at the service's price) reserved from the organization's gateway
funds; the upstream call, a stream passed through as it comes; then the real cost from the upstream's `usage`
(counted by the gateway only when the upstream sent none), the rest given back and the call's record buffered for
the capture task. A connection error before any byte is retried on the next service of the model when the caller
allows fallbacks (by default for an alias, not for a `provider/model` name); nothing is retried after that.
"""

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.utils.timezone import now
from django.utils.translation import gettext_lazy as _

from billing.services.gateway import SpendCapReached
from marketplace.gateway import tokens
from marketplace.gateway.counters import (
    Counters,
    DatabaseCounters,
    FundsShort,
    KeySpendLimitReached,
    RateLimitHit,
    RedisCounters,
    Reservation,
    units_to_amount,
)
from marketplace.gateway.directory import AppListing, Caller, Directory, Service
from marketplace.gateway.errors import NOT_FOUND, GatewayError, invalid
from marketplace.gateway.upstream import UpstreamForbidden, UpstreamUnreachable, client_session, upstream_post
from marketplace.services.applications import (
    SubscriptionRequired,
    application_call_admit,
    application_trial_give_back,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
JSON = b"application/json"
# Callers authenticate with a bearer token, never a cookie, so any origin may call (browsers: the site's try-it forms,
# and applications' own web pages).
ANY_ORIGIN = (b"access-control-allow-origin", b"*")
PREFLIGHT_HEADERS = [
    ANY_ORIGIN,
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, content-type, accept-language"),
    (b"access-control-max-age", b"86400"),
]
EVENT_END = re.compile(rb"\r?\n\r?\n")
USAGE_PRESENT = re.compile(rb'"usage"\s*:\s*\{')
STREAM_END = re.compile(rb"^data:\s*\[DONE\]", re.MULTILINE)  # OpenAI's last event of a stream
# Upstream answers that are the caller's doing pass through as they are; the rest are the platform's problem.
PASSED_THROUGH = {400, 413, 422}


class ClientGone(Exception):
    """The client hung up before its request arrived."""


def answer_cap_passed(call: "Call", size: int) -> GatewayError | None:
    """The error that ends a call whose answer passed GATEWAY_MAX_ANSWER_BYTES or GATEWAY_MAX_ANSWER_SECONDS."""
    if size > settings.GATEWAY_MAX_ANSWER_BYTES:
        return GatewayError(
            502, "upstream_answer_too_large", _("The model service's answer is over %(mb)s MB; it was cut off."),
            mb=f"{settings.GATEWAY_MAX_ANSWER_BYTES / 2**20:g}",
        )  # fmt: skip
    if time.perf_counter() - call.started > settings.GATEWAY_MAX_ANSWER_SECONDS:
        return GatewayError(
            504, "upstream_answer_too_slow", _("The model service took over %(seconds)d seconds; it was cut off."),
            seconds=settings.GATEWAY_MAX_ANSWER_SECONDS,
        )  # fmt: skip
    return None


@dataclass
class Call:
    caller: Caller
    endpoint: str
    requested_model: str
    body: dict
    candidates: list[Service]
    stream: bool = False
    include_usage: bool = False
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.perf_counter)
    created_at: str = field(default_factory=lambda: now().isoformat())
    # What happened, filled in as it goes
    service: Service | None = None
    status: int = 502
    error_code: str = "upstream_unavailable"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    # What the request allows the upstream to report: its prompt's bound and its output cap (see `usage_clamp`)
    prompt_limit: int = 0
    output_limit: int | None = None  # per service: None is the service's own output cap (0 for embeddings)
    usage_clamped: bool = False
    first_token_ms: int | None = None
    # A call of an application: its listing and what the call is for this caller (own, subscribed, trial, paid)
    application: AppListing | None = None
    application_mode: str = ""

    @property
    def answer_model(self) -> str:
        """The model the answer names: what the caller asked for when it is an application, else the service."""
        return self.application.name if self.application is not None else self.service.name

    @property
    def answered(self) -> bool:
        """The model generated an answer (the caller may have hung up during it): the application earns its price."""
        return self.status in (200, 499)

    def output_cap(self) -> int:
        """The most output tokens the call allows on the service that answered it."""
        if self.output_limit == 0:
            return 0
        return min(self.output_limit or self.service.max_output_tokens, self.service.max_output_tokens)

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


async def respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", JSON), ANY_ORIGIN, *headers],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def read_json(receive) -> dict:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(413, "request_too_large", _("The request body is over %(mb)d MB."), mb=8)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        data = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise invalid(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise invalid(_("The request body must be a JSON object."))
    return data


def upstream_error(status: int, raw: bytes, retry_after: str | None) -> GatewayError | None:
    """What to answer for an upstream's error; None when its answer passes through as it is."""
    if status in PASSED_THROUGH:
        try:
            error = orjson.loads(raw).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if isinstance(error, dict):
            return None
        return GatewayError(status, "upstream_rejected", _("The model service rejected the request."))
    if status == 429:
        seconds = int(retry_after) if retry_after and retry_after.isdigit() else 1
        return GatewayError(
            429, "upstream_rate_limited", _("The model service is busy; retry shortly."), retry_after=seconds
        )
    if status == 503:
        return GatewayError(503, "upstream_overloaded", _("The model service is overloaded; retry shortly."))
    if status in (401, 403, 404):
        return GatewayError(502, "upstream_misconfigured", _("The model service is misconfigured at its provider."))
    error = GatewayError(502, "upstream_error", _("The model service failed (status %(status)d)."))
    error.params = {"status": status}  # not a keyword: `status` is the gateway's own answer's
    return error


class Gateway:
    def __init__(self) -> None:
        self.directory = Directory()
        self.session: aiohttp.ClientSession | None = None
        self.counters: Counters | None = None
        self.requests_in_flight = 0  # until each is settled, after its answer was sent

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": PREFLIGHT_HEADERS})
            return await send({"type": "http.response.body", "body": b""})
        self.requests_in_flight += 1
        try:
            await self.handle(scope, receive, send, headers)
        except GatewayError as error:
            language = headers.get(b"accept-language", b"").decode("latin-1")
            await respond(send, error.status, error.body(language), error.headers())
        except ClientGone:
            return
        except Exception:
            logger.exception("gateway error", extra={"path": scope.get("path")})
            error = GatewayError(500, "internal_error", _("The gateway failed; retry the call."))
            with contextlib.suppress(RuntimeError):  # an answer had begun: the server closes the connection
                await respond(send, 500, error.body(""), [])
        finally:
            self.requests_in_flight -= 1

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.counters is not None:
            await self.counters.close()
        self.session = self.counters = None
        await sync_to_async(connections.close_all)()

    def _started(self) -> None:
        """The pooled client and the counters belong to the running event loop: made on the first call."""
        if self.session is None:
            self.session = client_session()
            url = settings.GATEWAY_REDIS_URL
            self.counters = RedisCounters(url) if url else DatabaseCounters()

    async def handle(self, scope, receive, send, headers: dict[bytes, bytes]) -> None:
        path, method = scope["path"], scope["method"]
        endpoints = {"/v1/chat/completions": self.chat, "/v1/embeddings": self.embeddings}
        if path != "/v1/models" and not path.startswith("/v1/models/") and path not in endpoints:
            raise NOT_FOUND
        caller = await self.authenticate(headers)
        self._started()
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(405, "method_not_allowed", _("Use GET."))
            return await self.models(caller, send, model=path[len("/v1/models/") :] or None)
        if method != "POST":
            raise GatewayError(405, "method_not_allowed", _("Use POST."))
        await endpoints[path](caller, await read_json(receive), receive, send)

    async def authenticate(self, headers: dict[bytes, bytes]) -> Caller:
        scheme, _sep, raw_key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not raw_key.strip():
            raise GatewayError(401, "missing_api_key", _("Send a platform API key: Authorization: Bearer mk_live_…."))
        caller = await self.directory.caller(raw_key.strip())
        if caller is None:
            raise GatewayError(401, "invalid_api_key", _("Invalid, expired or revoked API key."))
        if "gateway" not in caller.scopes:
            raise GatewayError(
                403, "insufficient_scope", _("This API key lacks the gateway scope; create a key that has it.")
            )
        return caller

    async def models(self, caller: Caller, send, *, model: str | None) -> None:
        services = await self.directory.visible_services(zones=caller.zones)
        listed = [
            {"id": s.name, "object": "model", "created": s.created, "owned_by": s.name.partition("/")[0]}
            for s in services
        ] + [
            {"id": app.name, "object": "model", "created": app.created, "owned_by": app.seller_slug}
            for app in await self.directory.visible_applications(zones=caller.zones)
        ]
        if model is None:
            return await respond(send, 200, orjson.dumps({"object": "list", "data": listed}))
        found = next((item for item in listed if item["id"] == model), None)
        if found is None:
            raise GatewayError(404, "model_not_found", _("The model %(model)s does not exist."), model=model)
        await respond(send, 200, orjson.dumps(found))

    async def route(self, caller: Caller, body: dict, *, modality: str, endpoint: str) -> tuple[str, list[Service]]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid(_("Name the model to call, as provider/model or a model alias."), param="model")
        services = await self.directory.route(model=model, modality=modality, zones=caller.zones)
        if not services:
            if caller.zones is not None and await self.directory.route(model=model, modality=modality, zones=None):
                raise GatewayError(
                    404, "model_not_in_zone",
                    _("The model %(model)s is not served in the residency zone your key or organization is pinned to."),
                    param="model", model=model,
                )  # fmt: skip
            raise GatewayError(
                404, "model_not_found",
                _("The model %(model)s does not exist or does not serve %(endpoint)s."),
                param="model", model=model, endpoint=endpoint,
            )  # fmt: skip
        preferences = body.get("provider") if isinstance(body.get("provider"), dict) else {}
        allow_fallbacks = preferences.get("allow_fallbacks", "/" not in model) is True
        return model, services if allow_fallbacks else services[:1]

    async def route_application(self, caller: Caller, body: dict) -> tuple[dict, AppListing, list[Service]]:
        """The application's current version applied to the call: its system prompt first, its temperature, its cap
        on output tokens; and the one service it runs on."""
        model = body["model"]
        found = await self.directory.application(model)
        if found is None or found[1] is None:
            raise GatewayError(404, "model_not_found", _("The application %(model)s does not exist."),
                               param="model", model=model)  # fmt: skip
        listing, service = found
        if caller.zones is not None and service.zone not in caller.zones:
            raise GatewayError(
                404, "model_not_in_zone",
                _("The model %(model)s is not served in the residency zone your key or organization is pinned to."),
                param="model", model=model,
            )  # fmt: skip
        prompt = [{"role": "system", "content": listing.system_prompt}] if listing.system_prompt else []
        body = {key: value for key, value in body.items() if key not in ("max_completion_tokens", "provider")}
        body["messages"] = prompt + body["messages"]
        if listing.temperature is not None:
            body["temperature"] = listing.temperature
        asked = body.get("max_tokens")
        if listing.max_tokens is not None:
            body["max_tokens"] = min(asked or listing.max_tokens, listing.max_tokens)
        return body, listing, [service]

    async def application_admit(self, call: Call) -> None:
        listing = call.application
        try:
            call.application_mode = await sync_to_async(application_call_admit)(
                application_id=listing.id, organization_id=call.caller.organization_id, seller_id=listing.seller_id,
                pricing=listing.pricing, trial_calls=listing.trial_calls,
            )  # fmt: skip
        except SubscriptionRequired as refusal:
            raise GatewayError(402, refusal.code, refusal.detail) from None

    async def application_trial_back(self, call: Call) -> None:
        """A free trial call that got no answer is not used up."""
        if call.application_mode == "trial" and not call.answered:
            await sync_to_async(application_trial_give_back)(
                application_id=call.application.id, organization_id=call.caller.organization_id
            )

    async def admit(self, call: Call, *, rate_tokens: int, worst_units: int) -> Reservation:
        """The rate limits counted and the worst case reserved from the organization's funds, both or neither."""
        try:
            return await self.counters.admit(caller=call.caller, units=worst_units, tokens=rate_tokens)
        except RateLimitHit as hit:
            raise GatewayError(
                429, "rate_limit_exceeded",
                _("Rate limit reached: %(what)s per minute for this %(scope)s. Retry after the Retry-After seconds."),
                retry_after=max(60 - int(time.time()) % 60, 1),
                what=_("requests") if hit.what == "requests" else _("tokens"),
                scope=_("API key") if hit.bucket.startswith("key:") else _("organization"),
            ) from None  # fmt: skip
        except KeySpendLimitReached:
            raise GatewayError(
                402, "budget_exceeded",
                _("The API key's monthly spend limit would be passed: the call may cost %(amount)s %(currency)s."),
                amount=f"{units_to_amount(worst_units):f}", currency=settings.PLATFORM_CURRENCY,
            ) from None  # fmt: skip
        except SpendCapReached as refusal:
            message = _(
                "The organization's monthly spend cap is reached: no more calls this month unless it is raised."
            )
            raise GatewayError(402, refusal.code, message) from None
        except FundsShort:
            raise GatewayError(
                402, "insufficient_funds",
                _("Insufficient funds: this call may cost up to %(amount)s %(currency)s. Top up or lower max_tokens."),
                amount=f"{units_to_amount(worst_units):f}", currency=settings.PLATFORM_CURRENCY,
            ) from None  # fmt: skip

    async def settle(self, call: Call, reservation: Reservation) -> None:
        """The call's real cost, what it reserved and did not cost given back, and its record buffered."""
        if call.service is None:
            return
        cost_units = call.service.cost_units(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens)
        application_units = 0
        if call.application_mode == "paid" and call.answered:
            application_units = call.application.price_units_of(
                prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens
            )
        cost_units += application_units
        if cost_units > reservation.units:  # never more than the call reserved (usage_clamp keeps it within)
            logger.error("model call cost over its reservation", extra={"call_id": call.call_id})
            cost_units = reservation.units
            application_units = min(application_units, cost_units)
        record = {
            "call_id": call.call_id,
            "organization_id": call.caller.organization_id,
            "api_key_id": call.caller.api_key_id,
            "model_service_id": call.service.id,
            "requested_model": call.requested_model,
            "residency_zone": call.service.zone,
            "endpoint": call.endpoint,
            "stream": call.stream,
            "status_code": call.status,
            "error_code": "" if call.status == 200 else call.error_code,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "tokens_estimated": call.tokens_estimated,
            "usage_clamped": call.usage_clamped,
            "cost_units": cost_units,
            "latency_ms": call.elapsed_ms(),
            "first_token_ms": call.first_token_ms,
            "created_at": call.created_at,
        }
        if call.application is not None:
            record.update(application_id=call.application.id, application_version_id=call.application.version_id,
                          application_units=application_units)  # fmt: skip
        try:
            await self.counters.settle(reservation, cost_units=cost_units, record=record)
        except Exception:
            logger.exception("model call not settled", extra={"call_id": call.call_id})

    def upstream_body(self, call: Call, service: Service) -> bytes:
        body = {key: value for key, value in call.body.items() if key != "provider"}
        body["model"] = service.upstream_model
        if call.stream:
            options = call.body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(body)

    async def open_upstream(self, call: Call, path: str) -> aiohttp.ClientResponse:
        """The first candidate that answers; a connection error moves on to the next (only before any byte), as does
        an upstream whose address the platform does not call."""
        forbidden = False
        for service in call.candidates:
            call.service = service
            try:
                return await upstream_post(
                    self.session,
                    url=f"{service.base_url}{path}",
                    api_key=service.upstream_api_key,
                    body=self.upstream_body(call, service),
                )
            except UpstreamUnreachable as error:
                logger.warning("upstream unreachable", extra={"model_service_id": service.id, "error": str(error)})
                self.directory.mark_unhealthy(service)
            except UpstreamForbidden as error:
                logger.warning("upstream forbidden", extra={"model_service_id": service.id, "error": str(error)})
                self.directory.mark_unhealthy(service)
                forbidden = True
        if forbidden:
            raise GatewayError(
                502,
                "upstream_forbidden",
                _("The model service's upstream is at an address the platform does not call. Call another one."),
            )
        raise GatewayError(
            502, "upstream_unavailable", _("The model service could not be reached. Retry, or call another one.")
        )

    async def chat(self, caller: Caller, body: dict, receive, send) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise invalid(_("Send the conversation as a non-empty list of messages."), param="messages")
        if not all(tokens.content_valid(message.get("content")) for message in messages):
            raise invalid(
                _("Each message's content is a string or a list of content parts; a text part's text is a string."),
                param="messages",
            )
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise invalid(_("max_tokens must be a positive whole number."), param="max_tokens")
        application = None
        if isinstance(body.get("model"), str) and body["model"].startswith("app:"):
            model = body["model"]
            body, application, candidates = await self.route_application(caller, body)
            messages, max_tokens = body["messages"], body.get("max_tokens")
        else:
            model, candidates = await self.route(caller, body, modality="chat", endpoint="/v1/chat/completions")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        call = Call(
            caller=caller, endpoint="chat", requested_model=model, body=body, candidates=candidates, stream=stream,
            include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
            application=application,
        )  # fmt: skip
        prompt_bound, prompt_measured = tokens.prompt_tokens_bound(messages), tokens.prompt_tokens(messages)
        call.prompt_limit, call.output_limit = tokens.prompt_tokens_limit(prompt_bound, prompt_measured), max_tokens
        worst = 0
        for service in candidates:
            output_bound = min(max_tokens or service.max_output_tokens, service.max_output_tokens)
            worst = max(worst, service.cost_units(prompt_tokens=prompt_bound, completion_tokens=output_bound))
        if application is not None:
            await self.application_admit(call)
            if call.application_mode == "paid":
                worst += application.price_units_of(prompt_tokens=prompt_bound, completion_tokens=output_bound)
        try:
            reservation = await self.admit(call, rate_tokens=prompt_measured + (max_tokens or 0), worst_units=worst)
        except GatewayError:
            await self.application_trial_back(call)
            raise
        try:
            response = await self.open_upstream(call, "/chat/completions")
            async with response:
                if stream and response.status == 200:
                    await self.pass_stream(call, response, receive, send)
                else:
                    await self.pass_whole(call, response, send)
        except GatewayError as error:
            call.status, call.error_code = error.status, error.code
            raise
        finally:
            await self.settle(call, reservation)
            await self.application_trial_back(call)

    async def embeddings(self, caller: Caller, body: dict, receive, send) -> None:
        inputs = tokens.embedding_inputs(body.get("input"))
        if not inputs or not all(isinstance(item, str | list) for item in inputs):
            raise invalid(_("Send the text to embed as input: a string or a list of strings."), param="input")
        model, candidates = await self.route(caller, body, modality="embeddings", endpoint="/v1/embeddings")
        call = Call(caller=caller, endpoint="embeddings", requested_model=model, body=body, candidates=candidates)
        bound, measured = tokens.embedding_tokens_bound(inputs), tokens.embedding_tokens(inputs)
        call.prompt_limit, call.output_limit = tokens.prompt_tokens_limit(bound, measured), 0
        worst = max(s.cost_units(prompt_tokens=bound, completion_tokens=0) for s in candidates)
        reservation = await self.admit(call, rate_tokens=measured, worst_units=worst)
        try:
            response = await self.open_upstream(call, "/embeddings")
            async with response:
                await self.pass_whole(call, response, send)
        except GatewayError as error:
            call.status, call.error_code = error.status, error.code
            raise
        finally:
            await self.settle(call, reservation)

    async def pass_whole(self, call: Call, response: aiohttp.ClientResponse, send) -> None:
        chunks, size = [], 0
        try:
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if capped := answer_cap_passed(call, size):
                    raise capped  # nothing was delivered: nothing is billed
                chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError):
            raise GatewayError(504, "upstream_timeout", _("The model service did not answer in time.")) from None
        raw = b"".join(chunks)
        if response.status != 200:
            error = upstream_error(response.status, raw, response.headers.get("Retry-After"))
            if error is not None:
                raise error
            call.status, call.error_code = response.status, "upstream_rejected"
            return await respond(send, response.status, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(502, "upstream_error", _("The model service sent an invalid answer.")) from None
        usage = data.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage_take(call, usage)
        else:
            self.count_whole(call, data)
        self.usage_clamp(call)
        data["model"] = call.answer_model
        call.status = 200
        await respond(send, 200, orjson.dumps(data), [(b"x-request-id", call.call_id.encode())])

    @staticmethod
    def usage_take(call: Call, usage: dict) -> None:
        """The upstream's counts; one that is not a whole number of zero or more (missing, negative, fractional,
        not a number) is taken as the request's bound, and the call is flagged."""
        counts = []
        for name, limit in (("prompt_tokens", call.prompt_limit), ("completion_tokens", None)):
            count = usage.get(name)
            if type(count) is not int or count < 0:
                if name == "completion_tokens" and count is None and call.endpoint == "embeddings":
                    count = 0  # embeddings generate nothing: their usage names no completion tokens
                else:
                    count, call.usage_clamped = limit if limit is not None else call.output_cap(), True
            counts.append(count)
        call.prompt_tokens, call.completion_tokens = counts

    def usage_clamp(self, call: Call) -> None:
        """Never more than the request allows: the prompt within its bound, the output within the call's cap. A
        call whose upstream reported more is billed at the bound, flagged, and counts against the service's
        health (tried last by aliases for a while). The gateway's own count (no usage sent) is held to the same
        bound, unflagged: its rule only approximates the service's tokenizer."""
        output_cap = call.output_cap()
        if call.prompt_tokens > call.prompt_limit or call.completion_tokens > output_cap:
            call.usage_clamped = call.usage_clamped or not call.tokens_estimated
            call.prompt_tokens = min(call.prompt_tokens, call.prompt_limit)
            call.completion_tokens = min(call.completion_tokens, output_cap)
        if call.usage_clamped:
            logger.warning("upstream usage clamped", extra={"model_service_id": call.service.id,
                                                             "call_id": call.call_id})  # fmt: skip
            self.directory.mark_unhealthy(call.service)

    def count_whole(self, call: Call, data: dict) -> None:
        call.tokens_estimated = True
        if call.endpoint == "embeddings":
            call.prompt_tokens = tokens.embedding_tokens(tokens.embedding_inputs(call.body.get("input")))
            return
        call.prompt_tokens = tokens.prompt_tokens(call.body["messages"])
        call.completion_tokens = sum(
            len(tokens.tokens_of(tokens.content_text((choice.get("message") or {}).get("content"))))
            for choice in data.get("choices") or []
        )

    async def pass_stream(self, call: Call, response: aiohttp.ClientResponse, receive, send) -> None:
        """Forward the upstream's events as they come, each whole and naming the service. The usage chunk the
        gateway asked for is kept from a caller that did not ask for it. A caller that hangs up does not stop the
        reading: the upstream's usage still arrives, so the call is billed exactly what the provider generated."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    ANY_ORIGIN,
                    (b"x-request-id", call.call_id.encode()),
                ],
            }
        )
        hung_up = asyncio.ensure_future(receive())  # completes only with http.disconnect
        pending, events, usage = b"", [], None
        # A caller that hangs up once it has the whole answer (the end event) got it all: only events it missed
        # make the call a hang-up (499).
        missed, delivered_end, size = False, False, 0
        # Chunks name the service as whole answers do, not the upstream's own model name.
        upstream_name = re.compile(rb'"model"\s*:\s*"' + re.escape(call.service.upstream_model.encode()) + rb'"')
        own_name = b'"model": ' + orjson.dumps(call.answer_model)
        try:
            async for chunk in response.content.iter_any():
                if call.first_token_ms is None:
                    call.first_token_ms = call.elapsed_ms()
                size += len(chunk)
                capped = answer_cap_passed(call, size)
                if capped is not None and size > settings.GATEWAY_MAX_ANSWER_BYTES:  # the events within the cap pass
                    chunk = chunk[: max(len(chunk) - (size - settings.GATEWAY_MAX_ANSWER_BYTES), 0)]
                pending += chunk
                forward = []
                while match := EVENT_END.search(pending):
                    event, pending = pending[: match.end()], pending[match.end() :]
                    events.append(event)
                    if USAGE_PRESENT.search(event):
                        chunk_data = self.event_data(event)
                        usage = chunk_data.get("usage") if isinstance(chunk_data, dict) else None
                        if not call.include_usage and isinstance(chunk_data, dict) and not chunk_data.get("choices"):
                            continue
                    forward.append(upstream_name.sub(own_name, event, count=1))
                if forward and not hung_up.done():
                    body = b"".join(forward)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    delivered_end = delivered_end or STREAM_END.search(body) is not None
                elif forward:
                    missed = True
                if capped is not None:
                    raise capped
            closed_early = missed or (hung_up.done() and not delivered_end)
            call.status = 499 if closed_early else 200
            call.error_code = "client_closed_request" if closed_early else ""
            tail = b""
        except (aiohttp.ClientError, TimeoutError):
            call.status, call.error_code = 502, "upstream_stream_broken"
            message = str(_("The model service stopped in the middle of the answer."))
            tail = b"data: " + orjson.dumps({"error": {"message": message, "code": call.error_code}}) + b"\n\n"
        except GatewayError as capped:  # billed for the events delivered before it
            call.status, call.error_code, pending = capped.status, capped.code, b""
            message = str(capped.message) % capped.params
            tail = b"data: " + orjson.dumps({"error": {"message": message, "code": call.error_code}}) + b"\n\n"
        finally:
            hung_up.cancel()
        await send({"type": "http.response.body", "body": pending + tail, "more_body": False})
        if isinstance(usage, dict) and usage:
            self.usage_take(call, usage)
        else:
            self.count_stream(call, events)
        self.usage_clamp(call)

    @staticmethod
    def event_data(event: bytes):
        data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None

    def count_stream(self, call: Call, events: list[bytes]) -> None:
        call.tokens_estimated = True
        call.prompt_tokens = tokens.prompt_tokens(call.body["messages"])
        for event in events:
            data = self.event_data(event)
            for choice in (data.get("choices") if isinstance(data, dict) else None) or []:
                delta = choice.get("delta") or {}
                call.completion_tokens += len(tokens.tokens_of(tokens.content_text(delta.get("content"))))


def with_django(gateway: Gateway, django_application):
    """One ASGI application: /v1/ (and the lifespan, which Django does not speak) to the gateway, the rest to
    Django."""

    async def application(scope, receive, send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"].startswith("/v1/")):
            return await gateway(scope, receive, send)
        return await django_application(scope, receive, send)

    return application
