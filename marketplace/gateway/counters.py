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

import hiredis
import orjson
from asgiref.sync import sync_to_async

from billing.services.gateway import gateway_funds_grow, gateway_funds_held, gateway_funds_reserve
from marketplace.gateway.directory import UNITS
from marketplace.gateway.redis_pipe import RedisPipe, RedisPipeError, Script
from marketplace.selectors.model_calls import model_calls_uncaptured_cost
from marketplace.services.model_calls import (
    model_call_admit_in_database,
    model_call_settle_in_database,
    model_calls_record,
)

logger = logging.getLogger(__name__)

CALLS_BUFFER = "gw:calls"

# Count a call against every rate limit of this minute and take its worst case from the organization's free gateway
# funds: both or neither. Answers {1, 0, epoch} taken; {0, 0, epoch} funds short; {-1, 0, ''} funds not in Redis;
# {-2, limit, 'requests'|'tokens'} a limit refused it.
ADMIT = """
local units, tokens, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local limits = (#KEYS - 1) / 2
for i = 1, limits do
  local rpm, tpm = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if rpm > 0 and tonumber(redis.call('GET', KEYS[2 * i]) or '0') + 1 > rpm then return {-2, i, 'requests'} end
  if tpm > 0 and tonumber(redis.call('GET', KEYS[2 * i + 1]) or '0') + tokens > tpm then return {-2, i, 'tokens'} end
end
local epoch = ''
if units > 0 then
  local funds = redis.call('HMGET', KEYS[1], 'available', 'epoch')
  if not funds[2] then return {-1, 0, ''} end
  epoch = funds[2]
  if tonumber(funds[1]) < units then return {0, 0, epoch} end
  redis.call('HINCRBY', KEYS[1], 'available', -units)
end
for i = 1, limits do
  redis.call('INCR', KEYS[2 * i]); redis.call('EXPIRE', KEYS[2 * i], ttl)
  redis.call('INCRBY', KEYS[2 * i + 1], tokens); redis.call('EXPIRE', KEYS[2 * i + 1], ttl)
end
return {1, 0, epoch}
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


def rate_window() -> int:
    """The current one-minute window of the rate limits: minutes since the epoch."""
    return int(time.time() // 60)


def units_to_amount(units: int) -> Decimal:
    return Decimal(units).scaleb(-8)


class RateLimitHit(Exception):
    def __init__(self, bucket: str, what: str) -> None:
        super().__init__(bucket)
        self.bucket, self.what = bucket, what


class FundsShort(Exception):
    """Not even the call's worst case can be held for it."""


class Counters:
    """The interface the gateway uses."""

    in_database = False

    async def admit(self, *, organization_id: int, units: int, limits, tokens: int) -> Reservation:
        """Count the call against its rate limits and reserve its worst case `units` from the organization's
        gateway funds (both or neither), holding more funds when they run short. Raises RateLimitHit, FundsShort,
        or SpendCapReached when the monthly cap stops the hold from growing."""
        for _attempt in range(4):
            taken, epoch = await self._admit_once(organization_id, units, limits, tokens)
            if taken:
                return Reservation(organization_id, units, epoch)
            if not await sync_to_async(self._grow)(organization_id, epoch, units):
                # Nothing more could be held, but a parallel call may just have held enough for both.
                taken, epoch = await self._admit_once(organization_id, units, limits, tokens)
                if taken:
                    return Reservation(organization_id, units, epoch)
                break
        raise FundsShort

    def _grow(self, organization_id: int, epoch: str, units: int) -> bool:
        """Hold more and count it where calls take from; both before the next grow starts (grows run one at a
        time on the thread the gateway's database work runs on), so a parallel call's retry sees it."""
        if gateway_funds_reserve(organization_id=organization_id, amount=units_to_amount(units), dry_run=True):
            return True  # a parallel call held more since this one looked
        added = gateway_funds_grow(
            organization_id=organization_id, needed=units_to_amount(units), count_available_here=self.in_database
        )
        return bool(added)

    async def _admit_once(self, organization_id: int, units: int, limits, tokens: int) -> tuple[bool, str]:
        """(taken, funds epoch); raises RateLimitHit."""
        raise NotImplementedError

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class RedisCounters(Counters):
    def __init__(self, url: str) -> None:
        import redis

        self.pipe = RedisPipe(url)
        self.sync_redis = redis.Redis.from_url(url)  # for the few calls made from the database thread
        self._admit = Script(self.pipe, ADMIT)
        self._funds_seed = Script(self.pipe, FUNDS_SEED)
        self._funds_settle = Script(self.pipe, FUNDS_SETTLE)

    async def _admit_once(self, organization_id: int, units: int, limits, tokens: int) -> tuple[bool, str]:
        window = rate_window()
        keys, args = [f"gw:funds:{organization_id}"], [units, tokens, 120]
        for bucket, requests_per_minute, tokens_per_minute in limits:
            keys += [f"gw:rl:{bucket}:r:{window}", f"gw:rl:{bucket}:t:{window}"]
            args += [requests_per_minute or 0, tokens_per_minute or 0]
        outcome, index, value = await self._admit(keys=keys, args=args)
        if outcome == -2:
            raise RateLimitHit(limits[index - 1][0], value.decode())
        if outcome == -1:
            await self._seed(organization_id)
            outcome, index, value = await self._admit(keys=keys, args=args)
        return outcome == 1, value.decode()

    async def _seed(self, organization_id: int) -> None:
        buffered = 0
        for raw in await self.pipe.execute("LRANGE", CALLS_BUFFER, 0, -1):
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
        try:
            await self._funds_settle(
                keys=[f"gw:funds:{reservation.organization_id}", CALLS_BUFFER],
                args=[reservation.epoch, reservation.units, cost_units, orjson.dumps(record)],
            )
        except (RedisPipeError, hiredis.ReplyError):
            # The call happened and must be billed: its record goes to the database. What it reserved stays
            # reserved (less to spend until Redis rebuilds the funds: the safe side).
            logger.exception("call settled without Redis", extra={"call_id": record["call_id"]})
            await sync_to_async(model_calls_record)(records=[record])

    async def close(self) -> None:
        await self.pipe.close()
        self.sync_redis.close()


class DatabaseCounters(Counters):
    """The embedded default: each count is a short transaction (SQLite serialises them)."""

    in_database = True

    async def _admit_once(self, organization_id: int, units: int, limits, tokens: int) -> tuple[bool, str]:
        refused = await sync_to_async(model_call_admit_in_database)(
            organization_id=organization_id, amount=units_to_amount(units), limits=limits, tokens=tokens,
            window=rate_window(),
        )  # fmt: skip
        if refused == "funds":
            return False, ""
        if refused is not None:
            raise RateLimitHit(*refused)
        return True, ""

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        await sync_to_async(model_call_settle_in_database)(
            record=record, give_back=units_to_amount(reservation.units - cost_units)
        )
