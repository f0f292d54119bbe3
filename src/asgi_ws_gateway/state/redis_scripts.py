"""The Redis store's Lua scripts: one per operation, each atomic, each reading the time from Redis.

Every script that writes first deletes what its key holds if the gateway did not write it
(:func:`_own`), refuses to grow Redis past ``maxmemory`` (:func:`_deny_when_full`) and only ever
extends its key's expiry (:func:`_extend`).
"""

from __future__ import annotations

from .periods import LUA_PERIOD

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"


def _own(kind: str, key: int = 1) -> str:
    """Lua that deletes ``KEYS[key]`` unless it holds a ``kind`` (or nothing).

    The key is this gateway's (its prefix, its layout), but something else wrote it: another
    program sharing the prefix, an older version of the gateway, a hand edit. Every script failed on
    it with WRONGTYPE, for good; and one such key among a process's leases failed every renewal,
    which made the whole store look down every second: every limit of every API unchecked (or 503)
    for as long as that connection stayed open. Its count starts again, as after an eviction.
    """
    return (
        f"local kind = redis.call('TYPE', KEYS[{key}])['ok']\n"
        f"if kind ~= '{kind}' and kind ~= 'none' then redis.call('DEL', KEYS[{key}]) end\n"
    )


def _deny_when_full(key: int = 1) -> str:
    """Lua whose first write is one Redis refuses past ``maxmemory``: a no-op ``ZADD ... XX``.

    Redis checks ``maxmemory`` for a script's command only until the script has called a write, and
    ZREMRANGEBYSCORE (or DEL) is a write it never refuses: scripts that called one first added their
    entries past the limit. With ``maxmemory-policy noeviction`` (what deployment.md recommends for
    leases) clients sending a fresh value per handshake to a limit keyed by a header grew Redis
    without bound (1,500 keys at 1.6 MB with maxmemory at 1.0 MB). Now such a script fails with
    OOM, which the store reports as unavailable: the policy fails open or closed as configured.
    """
    return f"redis.call('ZADD', KEYS[{key}], 'XX', 0, '')\n"


def _extend(ms: str, key: int = 1) -> str:
    """Lua that makes ``KEYS[key]`` live at least ``ms`` more milliseconds: never less than it had."""
    return f"if redis.call('PTTL', KEYS[{key}]) < {ms} then redis.call('PEXPIRE', KEYS[{key}], {ms}) end\n"


# The scripts that count (hit, consume, reserve) are run again by redis-py when a connection fails after
# Redis ran them but before their answer arrived (a connection cut mid-reply, an answer later than
# the timeout): each attempt carries an id, and an attempt already counted is not counted twice.
# (Two attempts were counted for one: a quota at 3 after two handshakes.)

# KEYS[1] sorted set of event times (ms), and member 'w' scored -(the longest window counting here, ms);
# ARGV limit, window ms, unique member -> {allowed, remaining, retry ms}.
# Each policy sharing the log counts the events in its own window; they are kept for the longest (a
# shorter window's hit removed events a longer one still counted).
HIT = (
    _NOW_MS
    + _own("zset")
    + _deny_when_full()
    + """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep = -tonumber(redis.call('ZSCORE', KEYS[1], 'w') or 0)
if keep < window then
  keep = window
  redis.call('ZADD', KEYS[1], -keep, 'w')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - keep)
local since = '(' .. (now - window)
local n = redis.call('ZCOUNT', KEYS[1], since, '+inf')
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, limit - n, 0} end  -- this attempt, sent again
"""
    + _extend("keep")
    + """
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  return {1, limit - n - 1, 0}
end
-- room when the oldest of the events past the limit leaves the window
local nth = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', n - limit, 1)
return {0, 0, tonumber(nth[2]) + window - now}
"""
)

# KEYS[1] hash {p: the period's start (POSIX s), n: its count}, KEYS[2] sorted set of the attempts
# counted lately (id -> time); ARGV limit, period (minute ... month), attempt id, ms an attempt is
# remembered -> {allowed, remaining, retry ms, the period's end (POSIX s)}. The period is Redis's.
CONSUME = (
    _NOW_MS
    + LUA_PERIOD
    + _own("hash")
    + _own("zset", 2)
    + _deny_when_full(2)
    + """
local limit = tonumber(ARGV[1])
local start, ends = period(ARGV[2], math.floor(now / 1000))
local n = 0
if tonumber(redis.call('HGET', KEYS[1], 'p')) == start then
  n = tonumber(redis.call('HGET', KEYS[1], 'n'))
  if not n or n < 0 or n ~= math.floor(n) or n >= 2^53 then n = 0 end  -- not a count to go on with
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then return {1, limit - n, 0, ends} end  -- this attempt, sent again
if n >= limit then return {0, 0, ends * 1000 - now, ends} end
n = n + 1
redis.call('HSET', KEYS[1], 'p', start, 'n', n)
local left = ends * 1000 - now + 1000
"""
    + _extend("left")
    + """
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, limit - n, 0, ends}
"""
)

# KEYS[1] sorted set lease -> expiry ms; ARGV limit, ttl ms, lease -> {allowed, remaining, retry ms}
ACQUIRE = (
    _NOW_MS
    + _own("zset")
    + _deny_when_full()
    + """
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if n >= limit then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 0, tonumber(first[2]) - now}
  end
  n = n + 1
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
"""
    + _extend("ttl")
    + """
return {1, limit - n, 0}
"""
)

# KEYS[1] sorted set; ARGV ttl ms, then leases -> how many were gone (expired, or lost with Redis's data).
# Re-adds them: their connections are still open.
RENEW = (
    _NOW_MS
    + _own("zset")
    + """
local expiry = now + tonumber(ARGV[1])
local scored = {}
for i = 2, #ARGV do
  scored[#scored + 1] = expiry
  scored[#scored + 1] = ARGV[i]
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- expired: re-added below, and counted as gone
local gone = redis.call('ZADD', KEYS[1], unpack(scored))  -- the leases that were not there
"""
    + _extend("tonumber(ARGV[1])")
    + """
return gone
"""
)

# KEYS[1] sorted set; ARGV lease. A key holding something else has no lease to give back.
RELEASE = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# KEYS[1] hash {w: window index, c1.. counters, a0..a7: the last attempts and what they got, ai: the
# next of those}; ARGV window ms, then (amount, limit) pairs, then the attempt id
# -> {granted..., window index, ms until the window ends}
RESERVE = (
    _NOW_MS
    + _own("hash")
    + """
local window, id = tonumber(ARGV[1]), ARGV[#ARGV]
local done = redis.call('HMGET', KEYS[1], 'a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7')
for _, entry in ipairs(done) do
  if entry and string.sub(entry, 1, #id + 1) == id .. ' ' then  -- this attempt, sent again: what it got
    local out = {}
    for n in string.gmatch(string.sub(entry, #id + 2), '%S+') do out[#out + 1] = tonumber(n) end
    out[#out + 1] = (out[#out] + 1) * window - now
    return out
  end
end
local w = math.floor(now / window)
local fresh = tonumber(redis.call('HGET', KEYS[1], 'w')) ~= w
local out = {}
for i = 2, #ARGV - 2, 2 do
  local field = 'c' .. (i / 2)
  local n = 0
  if not fresh then n = math.max(0, tonumber(redis.call('HGET', KEYS[1], field)) or 0) end
  local grant = math.max(0, math.min(tonumber(ARGV[i]), tonumber(ARGV[i + 1]) - n))
  redis.call('HSET', KEYS[1], field, n + grant)
  out[#out + 1] = grant
end
out[#out + 1] = w
local slot = redis.call('HINCRBY', KEYS[1], 'ai', 1) % 8
local kept = {}  -- as integers: concatenated, a number has 14 digits (123456789012345 came back ...340)
for k, n in ipairs(out) do kept[k] = string.format('%d', n) end
redis.call('HSET', KEYS[1], 'w', w, 'a' .. slot, id .. ' ' .. table.concat(kept, ' '))
local left = (w + 1) * window - now
out[#out + 1] = left
left = left + 1000
"""
    + _extend("left")
    + """
return out
"""
)


# KEYS[1] the RESERVE hash; ARGV the window index the amounts were granted in, then one amount per counter
# (c1, c2, ...), then the attempt id -> 1 if given back, 0 if not (another window, a hash not the gateway's,
# an attempt sent again). Only into the window they were granted in: a window that rolled starts from 0,
# and what was reserved in it is another connection's. Never below 0: the amounts are at most what this
# worker was granted in that window, so what the others were granted stays counted.
REFUND = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'w')) ~= tonumber(ARGV[1]) then return 0 end
local id = ARGV[#ARGV]
local done = redis.call('HMGET', KEYS[1], 'r0', 'r1', 'r2', 'r3')
for _, entry in ipairs(done) do
  if entry == id then return 0 end  -- this attempt, sent again: given back once
end
for i = 2, #ARGV - 1 do
  local field = 'c' .. (i - 1)
  local n = tonumber(redis.call('HGET', KEYS[1], field)) or 0
  redis.call('HSET', KEYS[1], field, math.max(0, n - tonumber(ARGV[i])))
end
redis.call('HSET', KEYS[1], 'r' .. (redis.call('HINCRBY', KEYS[1], 'ri', 1) % 4), id)
return 1
"""


__all__ = ["ACQUIRE", "CONSUME", "HIT", "REFUND", "RELEASE", "RENEW", "RESERVE"]
