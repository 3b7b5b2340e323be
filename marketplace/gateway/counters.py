"""What every web worker must count together: rate-limit windows and the funds calls reserve.

In Redis (each check-and-count is one Lua script, so parallel calls from many workers cannot both pass a limit), or
in the database on the embedded default. Money here is an integer of the ledger's last place (1e-8).

The funds one organization's calls may still reserve live in the hash `gw:funds:<id>` (`available`, `epoch`). When
Redis loses it, it is rebuilt from the database as the hold's remainder less the costs of calls not captured yet
(buffered first, then written: read in that order a call is counted twice at worst, never missed) under a new
epoch; a call that reserved under the old epoch then takes only its cost, not its refund.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

import orjson
from asgiref.sync import sync_to_async

from billing.services.gateway import gateway_funds_grow, gateway_funds_held, gateway_funds_reserve
from marketplace.gateway.directory import UNITS
from marketplace.selectors.model_calls import model_calls_uncaptured_cost
from marketplace.services.model_calls import model_call_settle_in_database, model_calls_record, rate_window_admit

logger = logging.getLogger(__name__)

CALLS_BUFFER = "gw:calls"
REDIS_CONNECTIONS = 64  # per web worker

RATE_ADMIT = """
local tokens, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  local rpm, tpm = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if rpm > 0 and tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0') + 1 > rpm then return {i, 'requests'} end
  if tpm > 0 and tonumber(redis.call('GET', KEYS[2 * i]) or '0') + tokens > tpm then return {i, 'tokens'} end
end
for i = 1, #KEYS / 2 do
  redis.call('INCR', KEYS[2 * i - 1]); redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  redis.call('INCRBY', KEYS[2 * i], tokens); redis.call('EXPIRE', KEYS[2 * i], ttl)
end
return {0, ''}
"""
FUNDS_TAKE = """
local funds = redis.call('HMGET', KEYS[1], 'available', 'epoch')
if not funds[2] then return {-1, ''} end
if tonumber(funds[1]) < tonumber(ARGV[1]) then return {0, funds[2]} end
redis.call('HINCRBY', KEYS[1], 'available', -tonumber(ARGV[1]))
return {1, funds[2]}
"""
FUNDS_ADD = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then redis.call('HINCRBY', KEYS[1], 'available', ARGV[2]) end
return 0
"""
FUNDS_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'available', ARGV[1], 'epoch', ARGV[2])
return 1
"""
# Give back what a call reserved and did not cost, and buffer its record, in one step.
FUNDS_SETTLE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then redis.call('HINCRBY', KEYS[1], 'available', tonumber(ARGV[2]) - tonumber(ARGV[3]))
elseif epoch then redis.call('HINCRBY', KEYS[1], 'available', -tonumber(ARGV[3])) end
redis.call('RPUSH', KEYS[2], ARGV[4])
return 0
"""


@dataclass(frozen=True)
class Reservation:
    organization_id: int
    units: int
    epoch: str = ""


def units_to_amount(units: int) -> Decimal:
    return Decimal(units).scaleb(-8)


class Counters:
    """The interface the gateway uses; `reserve` grows the organization's hold when it runs short."""

    in_database = False

    async def rate_admit(self, *, limits, tokens: int) -> tuple[str, str] | None:
        """None when the call fits every limit (and is counted), else (the limit's bucket, requests|tokens)."""
        raise NotImplementedError

    async def reserve(self, *, organization_id: int, units: int) -> Reservation | None:
        """Reserve `units` for a call, holding more funds when needed; None when the organization cannot pay.
        Raises SpendCapReached when its monthly cap stops the hold from growing."""
        for _attempt in range(4):
            taken, epoch = await self._take(organization_id, units)
            if taken:
                return Reservation(organization_id, units, epoch)
            if not await sync_to_async(self._grow)(organization_id, epoch, units):
                # Nothing more could be held, but a parallel call may just have held enough for both.
                taken, epoch = await self._take(organization_id, units)
                return Reservation(organization_id, units, epoch) if taken else None
        return None

    def _grow(self, organization_id: int, epoch: str, units: int) -> bool:
        """Hold more and count it where calls take from; both before the next grow starts (grows run one at a
        time on the thread the gateway's database work runs on), so a parallel call's retry sees it."""
        added = gateway_funds_grow(
            organization_id=organization_id, needed=units_to_amount(units), count_available_here=self.in_database
        )
        return bool(added)

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        raise NotImplementedError

    async def _take(self, organization_id: int, units: int) -> tuple[bool, str]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class RedisCounters(Counters):
    def __init__(self, url: str) -> None:
        import redis
        import redis.asyncio

        # A call waits for a free connection rather than failing when every one is busy: Redis answers in
        # microseconds, so a few dozen connections serve thousands of calls in flight.
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=REDIS_CONNECTIONS, timeout=10)
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.sync_redis = redis.Redis.from_url(url)
        self._rate_admit = self.redis.register_script(RATE_ADMIT)
        self._funds_take = self.redis.register_script(FUNDS_TAKE)
        self._funds_seed = self.redis.register_script(FUNDS_SEED)
        self._funds_settle = self.redis.register_script(FUNDS_SETTLE)

    async def rate_admit(self, *, limits, tokens: int) -> tuple[str, str] | None:
        window = int(time.time() // 60)
        keys, args = [], [tokens, 120]
        for bucket, requests_per_minute, tokens_per_minute in limits:
            keys += [f"gw:rl:{bucket}:r:{window}", f"gw:rl:{bucket}:t:{window}"]
            args += [requests_per_minute or 0, tokens_per_minute or 0]
        index, what = await self._rate_admit(keys=keys, args=args)
        return None if index == 0 else (limits[index - 1][0], what.decode())

    async def _take(self, organization_id: int, units: int) -> tuple[bool, str]:
        key = f"gw:funds:{organization_id}"
        taken, epoch = await self._funds_take(keys=[key], args=[units])
        if taken == -1:
            await self._seed(organization_id)
            taken, epoch = await self._funds_take(keys=[key], args=[units])
        return taken == 1, epoch.decode()

    async def _seed(self, organization_id: int) -> None:
        buffered = 0
        for raw in await self.redis.lrange(CALLS_BUFFER, 0, -1):
            record = orjson.loads(raw)
            if record["organization_id"] == organization_id:
                buffered += record["cost_units"]
        uncaptured = await sync_to_async(model_calls_uncaptured_cost)(organization_id=organization_id)
        held = await sync_to_async(gateway_funds_held)(organization_id=organization_id)
        available = int((held - uncaptured) * UNITS) - buffered
        await self._funds_seed(keys=[f"gw:funds:{organization_id}"], args=[available, uuid.uuid4().hex])

    def _grow(self, organization_id: int, epoch: str, units: int) -> bool:
        available = self.sync_redis.hget(f"gw:funds:{organization_id}", "available")
        if available is not None and int(available) >= units:
            return True  # a parallel call held more since this one looked
        added = gateway_funds_grow(organization_id=organization_id, needed=units_to_amount(units),
                                   count_available_here=False)  # fmt: skip
        if added:  # after the commit: a crash in between leaves the funds held but not counted (the safe side)
            self.sync_redis.eval(FUNDS_ADD, 1, f"gw:funds:{organization_id}", epoch, int(added * UNITS))
        return bool(added)

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        import redis

        try:
            await self._funds_settle(
                keys=[f"gw:funds:{reservation.organization_id}", CALLS_BUFFER],
                args=[reservation.epoch, reservation.units, cost_units, orjson.dumps(record)],
            )
        except redis.RedisError:
            # The call happened and must be billed: its record goes to the database. What it reserved stays
            # reserved (less to spend until Redis rebuilds the funds: the safe side).
            logger.exception("call settled without Redis", extra={"call_id": record["call_id"]})
            await sync_to_async(model_calls_record)(records=[record])

    async def close(self) -> None:
        await self.redis.aclose()
        self.sync_redis.close()


class DatabaseCounters(Counters):
    """The embedded default: each count is a short transaction (SQLite serialises them)."""

    in_database = True

    async def rate_admit(self, *, limits, tokens: int) -> tuple[str, str] | None:
        return await sync_to_async(rate_window_admit)(limits=limits, tokens=tokens, window=int(time.time() // 60))

    async def _take(self, organization_id: int, units: int) -> tuple[bool, str]:
        amount = units_to_amount(units)
        return await sync_to_async(gateway_funds_reserve)(organization_id=organization_id, amount=amount), ""

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        await sync_to_async(model_call_settle_in_database)(
            record=record, give_back=units_to_amount(reservation.units - cost_units)
        )
