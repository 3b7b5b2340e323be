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
from django.conf import settings
from django.utils.timezone import localdate, now
from django.utils.translation import gettext as _

from billing.services.gateway import (
    SpendCapReached,
    gateway_funds_grow,
    gateway_funds_held,
    gateway_funds_reserve,
)
from billing.services.quotas import month_spend
from marketplace.gateway.directory import UNITS, Caller
from marketplace.gateway.redis_pipe import RedisPipe, RedisPipeError, Script
from marketplace.selectors.model_calls import model_calls_uncaptured_cost
from marketplace.services.model_calls import (
    model_call_admit_in_database,
    model_call_settle_in_database,
    model_calls_record,
)

logger = logging.getLogger(__name__)

CALLS_BUFFER = "gw:calls"

# Count a call against every rate limit of this minute, its key's monthly spend limit and its organization's monthly
# spend cap, and take its worst case from the organization's free gateway funds: all or nothing. KEYS: funds, the
# key's month spend, the organization's month spend, then a requests and a tokens counter per limit; ARGV: units,
# tokens, counters' lifetime, the key's limit in units (-1: none), the organization's cap in units (-1: none), then
# requests and tokens per minute per limit. Answers {1, 0, epoch} taken; {0, 0, epoch} funds short; {-1, 0, ''}
# funds not in Redis; {-2, limit, 'requests'|'tokens'} a rate limit refused it; {-3, 0, ''} the key's month spend
# not in Redis; {-4, 0, ''} the key's spend limit refused it; {-5, 0, ''} the organization's month spend not in
# Redis; {-6, 0, ''} the organization's cap refused it.
ADMIT = """
local units, tokens, ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local org_cap = tonumber(ARGV[5])
local limits = (#KEYS - 3) / 2
for i = 1, limits do
  local rpm, tpm = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if rpm > 0 and tonumber(redis.call('GET', KEYS[2 + 2 * i]) or '0') + 1 > rpm then return {-2, i, 'requests'} end
  if tpm > 0 and tonumber(redis.call('GET', KEYS[3 + 2 * i]) or '0') + tokens > tpm then return {-2, i, 'tokens'} end
end
if cap >= 0 then
  local spent = redis.call('GET', KEYS[2])
  if not spent then return {-3, 0, ''} end
  if tonumber(spent) + units > cap then return {-4, 0, ''} end
end
if org_cap >= 0 then
  local spent = redis.call('GET', KEYS[3])
  if not spent then return {-5, 0, ''} end
  if tonumber(spent) + units > org_cap then return {-6, 0, ''} end
end
local epoch = ''
if units > 0 then
  local funds = redis.call('HMGET', KEYS[1], 'available', 'epoch')
  if not funds[2] then return {-1, 0, ''} end
  epoch = funds[2]
  if tonumber(funds[1]) < units then return {0, 0, epoch} end
  redis.call('HINCRBY', KEYS[1], 'available', -units)
end
if cap >= 0 then redis.call('INCRBY', KEYS[2], units) end
if org_cap >= 0 then redis.call('INCRBY', KEYS[3], units) end
for i = 1, limits do
  redis.call('INCR', KEYS[2 + 2 * i]); redis.call('EXPIRE', KEYS[2 + 2 * i], ttl)
  redis.call('INCRBY', KEYS[3 + 2 * i], tokens); redis.call('EXPIRE', KEYS[3 + 2 * i], ttl)
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
# Give back what a call reserved and did not cost, correct its key's and its organization's month spend to the real
# cost, and buffer its record, in one step. KEYS: funds, the buffer, the key's month spend ('' when the key has no
# limit), the organization's month spend ('' when it has no cap).
FUNDS_SETTLE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then redis.call('HINCRBY', KEYS[1], 'available', tonumber(ARGV[2]) - tonumber(ARGV[3]))
elseif epoch then redis.call('HINCRBY', KEYS[1], 'available', -tonumber(ARGV[3])) end
for i = 3, 4 do
  if KEYS[i] ~= '' and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], tonumber(ARGV[3]) - tonumber(ARGV[2]))
  end
end
redis.call('RPUSH', KEYS[2], ARGV[4])
return 0
"""
# Zero an organization's free funds under a new epoch if they show nothing reserved (all ARGV[1] of the hold free,
# or not in Redis at all: then no call can have reserved, and a later seed finds the key and leaves it).
FUNDS_RETIRE = """
local available = redis.call('HGET', KEYS[1], 'available')
if available and available ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'available', 0, 'epoch', ARGV[2])
return 1
"""
KEY_SPEND_SEED = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return 0
"""


@dataclass(frozen=True)
class Reservation:
    organization_id: int
    units: int
    epoch: str = ""
    spend_key: str = ""  # the Redis counter of the API key's month spend, when the key has a limit
    cap_key: str = ""  # the Redis counter of the organization's month spend, when it has a cap


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


class KeySpendLimitReached(Exception):
    """The call's worst case would take its API key past the key's monthly spend limit."""


def spend_cap_reached() -> SpendCapReached:
    """The call's worst case would take its organization past the monthly spend cap."""
    return SpendCapReached(_("This month's spend cap is reached; staff can raise it, or wait for the month."))


def organization_spend_counter(organization_id: int) -> str:
    """The Redis counter of the organization's spend (and calls in flight) this month. It lives only
    GATEWAY_SPEND_CAP_RECOUNT_SECONDS and is then recounted from the database, so spend outside the gateway (rentals,
    subscriptions) stops calls within that: a standing hold grown while the cap had room does not outlive it."""
    return f"gw:orgspend:{organization_id}:{localdate():%Y%m}"


def key_spend_counter(api_key_id: int) -> str:
    """The Redis counter of the key's spend (and calls in flight) this month, in the platform's time zone."""
    return f"gw:keyspend:{api_key_id}:{localdate():%Y%m}"


class Counters:
    """The interface the gateway uses."""

    in_database = False

    async def admit(self, *, caller: Caller, units: int, tokens: int) -> Reservation:
        """Count the call against its rate limits and its key's monthly spend limit and reserve its worst case
        `units` from the organization's gateway funds (all or nothing), holding more funds when they run short.
        Raises RateLimitHit, KeySpendLimitReached, FundsShort, or SpendCapReached when the organization's monthly
        cap stops the hold from growing."""
        organization_id = caller.organization_id
        for _attempt in range(4):
            taken, reservation = await self._admit_once(caller, units, tokens)
            if taken:
                return reservation
            if not await sync_to_async(self._grow)(organization_id, reservation.epoch, units):
                # Nothing more could be held, but a parallel call may just have held enough for both.
                taken, reservation = await self._admit_once(caller, units, tokens)
                if taken:
                    return reservation
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

    async def _admit_once(self, caller: Caller, units: int, tokens: int) -> tuple[bool, Reservation]:
        """(taken, the reservation or what it would have been); raises RateLimitHit or KeySpendLimitReached."""
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
        self._key_spend_seed = Script(self.pipe, KEY_SPEND_SEED)

    async def _admit_once(self, caller: Caller, units: int, tokens: int) -> tuple[bool, Reservation]:
        window, limited, capped = (
            rate_window(),
            caller.spend_limit_units is not None,
            caller.spend_cap_units is not None,
        )
        spend_key = key_spend_counter(caller.api_key_id) if limited else ""
        cap_key = organization_spend_counter(caller.organization_id) if capped else ""
        keys = [f"gw:funds:{caller.organization_id}", spend_key or "gw:keyspend:none", cap_key or "gw:orgspend:none"]
        args = [
            units,
            tokens,
            120,
            caller.spend_limit_units if limited else -1,
            caller.spend_cap_units if capped else -1,
        ]
        for bucket, requests_per_minute, tokens_per_minute in caller.limits:
            keys += [f"gw:rl:{bucket}:r:{window}", f"gw:rl:{bucket}:t:{window}"]
            args += [requests_per_minute or 0, tokens_per_minute or 0]
        for _missing in range(3):
            outcome, index, value = await self._admit(keys=keys, args=args)
            if outcome == -1:
                await self._seed(caller.organization_id)
            elif outcome == -3:
                await self._seed_key_spend(caller, spend_key)
            elif outcome == -5:
                await self._seed_organization_spend(caller, cap_key)
            else:
                break
        if outcome == -2:
            raise RateLimitHit(caller.limits[index - 1][0], value.decode())
        if outcome == -4:
            raise KeySpendLimitReached
        if outcome == -6:
            raise spend_cap_reached()
        return outcome == 1, Reservation(caller.organization_id, units, value.decode(), spend_key, cap_key)

    async def _seed_key_spend(self, caller: Caller, counter: str) -> None:
        """The key's month spend from the database (rentals and written calls) and the calls still buffered."""
        buffered = sum(
            record["cost_units"]
            for record in map(orjson.loads, await self.pipe.execute("LRANGE", CALLS_BUFFER, 0, -1))
            if record["api_key_id"] == caller.api_key_id
        )
        spent = await sync_to_async(month_spend)(
            organization_id=caller.organization_id, moment=now(), api_key_id=caller.api_key_id
        )
        await self._key_spend_seed(keys=[counter], args=[int(spent * UNITS) + buffered, 40 * 24 * 3600])

    async def _seed_organization_spend(self, caller: Caller, counter: str) -> None:
        """The organization's month spend from the database (rentals, subscriptions, written calls) and the calls
        still buffered, for GATEWAY_SPEND_CAP_RECOUNT_SECONDS. Calls in flight when it is recounted are not in it
        until they settle: they may pass the cap by their worst cases together, as on the embedded default."""
        buffered = sum(
            record["cost_units"]
            for record in map(orjson.loads, await self.pipe.execute("LRANGE", CALLS_BUFFER, 0, -1))
            if record["organization_id"] == caller.organization_id
        )
        spent = await sync_to_async(month_spend)(organization_id=caller.organization_id, moment=now())
        lifetime = max(settings.GATEWAY_SPEND_CAP_RECOUNT_SECONDS, 1)
        await self._key_spend_seed(keys=[counter], args=[int(spent * UNITS) + buffered, lifetime])

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
                keys=[
                    f"gw:funds:{reservation.organization_id}",
                    CALLS_BUFFER,
                    reservation.spend_key,
                    reservation.cap_key,
                ],  # fmt: skip
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

    async def _admit_once(self, caller: Caller, units: int, tokens: int) -> tuple[bool, Reservation]:
        refused = await sync_to_async(model_call_admit_in_database)(
            organization_id=caller.organization_id, amount=units_to_amount(units), limits=caller.limits,
            tokens=tokens, window=rate_window(), api_key_id=caller.api_key_id,
            spend_limit=None if caller.spend_limit_units is None else units_to_amount(caller.spend_limit_units),
            spend_cap=None if caller.spend_cap_units is None else units_to_amount(caller.spend_cap_units),
        )  # fmt: skip
        if refused == "key_spend_limit":
            raise KeySpendLimitReached
        if refused == "spend_cap":
            raise spend_cap_reached()
        if refused is not None and refused != "funds":
            raise RateLimitHit(*refused)
        return refused is None, Reservation(caller.organization_id, units)

    async def settle(self, reservation: Reservation, *, cost_units: int, record: dict) -> None:
        await sync_to_async(model_call_settle_in_database)(
            record=record, give_back=units_to_amount(reservation.units - cost_units)
        )


def funds_retire(*, url: str, organization_id: int, remaining: Decimal) -> str | None:
    """Stop calls from reserving the organization's gateway hold before it is released: its Redis funds zeroed if
    they show the whole `remaining` free (nothing reserved). Returns the new epoch, or None when something is
    reserved. A call after this finds no funds and grows a new hold first."""
    import redis

    epoch = uuid.uuid4().hex
    with redis.Redis.from_url(url) as client:
        done = client.eval(FUNDS_RETIRE, 1, f"gw:funds:{organization_id}", int(remaining * UNITS), epoch)
    return epoch if done else None


def funds_reconcile(*, url: str, organization_id: int, held_free: Decimal) -> dict | None:
    """Check the organization's Redis funds against what its hold has free (`held_free`: the hold's remainder less
    the written calls not captured yet) less the calls still buffered. Funds below zero or above that (more free than
    held) are set to it under a new epoch: calls in flight then take only their cost. Returns the mismatch, or None."""
    import redis

    key = f"gw:funds:{organization_id}"
    with redis.Redis.from_url(url) as client:
        buffered = sum(
            record["cost_units"]
            for record in map(orjson.loads, client.lrange(CALLS_BUFFER, 0, -1))
            if record["organization_id"] == organization_id
        )
        derived = int(held_free * UNITS) - buffered
        available = client.hget(key, "available")
        if available is None or 0 <= int(available) <= derived:
            return None
        client.hset(key, mapping={"available": max(derived, 0), "epoch": uuid.uuid4().hex})
    return {"cached": units_to_amount(int(available)), "derived": units_to_amount(max(derived, 0))}


def funds_restore(*, url: str, organization_id: int, epoch: str, remaining: Decimal) -> None:
    """The hold was not released after all (it grew meanwhile): its free funds back, unless Redis was reseeded."""
    import redis

    with redis.Redis.from_url(url) as client:
        client.eval(FUNDS_ADD, 1, f"gw:funds:{organization_id}", epoch, int(remaining * UNITS))
