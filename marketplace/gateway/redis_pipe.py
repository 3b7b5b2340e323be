"""A Redis client for the gateway's hot path: one connection per worker, shared by every call in flight.

Redis answers the commands of one connection in the order they came, so each call writes its command and waits for
the reply at its place in the queue: no pool to wait on, no per-command locking, and replies parsed by hiredis in
batches. The gateway sends only short scripts (EVALSHA) this way; anything else uses redis-py.
"""

import asyncio
import hashlib
import ssl
from collections import deque
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

REPLY_TIMEOUT_SECONDS = 5


class RedisPipeError(ConnectionError):
    """The connection failed or Redis did not answer in time; every call waiting on it gets this."""


def _pack(args: tuple) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Connection:
    """One connection and the calls waiting on it, in the order their commands were written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer, self.waiting, self.closed = writer, deque(), False
        self.reading = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    waiter = self.waiting.popleft()
                    if waiter.cancelled():
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        waiter.set_exception(reply)
                    else:
                        waiter.set_result(reply)
        except (OSError, hiredis.ProtocolError):
            pass
        self.fail(RedisPipeError("the connection to Redis closed"))

    def fail(self, error: Exception) -> None:
        """Close it; every call still waiting on it gets `error`."""
        self.closed = True
        self.writer.close()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def send(self, args: tuple):
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.writer.write(_pack(args))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
                return await waiter
        except TimeoutError:
            self.fail(RedisPipeError("Redis did not answer in time"))
            raise RedisPipeError("Redis did not answer in time") from None


CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The TLS settings a `rediss://` URL names, read as redis-py reads them: `ssl_cert_reqs` (none, optional,
    required: the default), `ssl_ca_certs` (a CA file; else the system's), `ssl_check_hostname`, and
    `ssl_certfile`/`ssl_keyfile` for a client certificate."""
    option = {name: values[-1] for name, values in query.items()}
    reqs = option.get("ssl_cert_reqs", "required").lower()
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}")
    context = ssl.create_default_context(cafile=option.get("ssl_ca_certs") or None)
    check_hostname = option.get("ssl_check_hostname", "true").lower() in {"1", "true", "yes"}
    context.check_hostname = CERT_REQS[reqs] != ssl.CERT_NONE and check_hostname
    context.verify_mode = CERT_REQS[reqs]
    if option.get("ssl_certfile"):
        context.load_cert_chain(option["ssl_certfile"], option.get("ssl_keyfile") or None)
    return context


class RedisPipe:
    """Speaks the URLs redis-py's `from_url` does for a TCP connection: `redis://` or `rediss://` (TLS, with the
    ssl_* query options), `[user][:password]@`, a database number in the path (or `?db=`), and `?password=`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"the gateway's Redis URL must be redis:// or rediss://, not {parts.scheme}://")
        query = parse_qs(parts.query)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        password = unquote(parts.password) if parts.password else query.get("password", [None])[-1]
        self.password = password or None
        self.username = unquote(parts.username) if parts.username else None
        self.db = int(parts.path.lstrip("/") or query.get("db", ["0"])[-1] or 0)
        self.ssl = tls_context(query) if parts.scheme == "rediss" else None
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> _Connection:
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                try:
                    connection = _Connection(*await asyncio.open_connection(self.host, self.port, ssl=self.ssl))
                except OSError as error:
                    raise RedisPipeError(str(error)) from error
                try:
                    if self.password:
                        await connection.send(("AUTH", self.username, self.password) if self.username
                                              else ("AUTH", self.password))  # fmt: skip
                    if self.db:
                        await connection.send(("SELECT", self.db))
                except hiredis.ReplyError as error:  # a wrong password or database: not left open
                    connection.fail(RedisPipeError(str(error)))
                    raise
                self._connection = connection
            return self._connection

    async def execute(self, *args):
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connected()
        return await connection.send(args)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.fail(RedisPipeError("closed"))
            self._connection.reading.cancel()


class Script:
    """A Lua script run by its SHA1, loaded on first use (and again after Redis forgot it)."""

    def __init__(self, pipe: RedisPipe, source: str) -> None:
        self.pipe, self.source = pipe, source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: list, args: list):
        try:
            return await self.pipe.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await self.pipe.execute("EVAL", self.source, len(keys), *keys, *args)
