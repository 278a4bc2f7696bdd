-- The Redis limiter's check (issuer.ratelimit.redis_backend): a sliding-window log,
-- decided and charged atomically, one script run per check.
-- KEYS: one sorted set per rule (members "<ms>:<nonce>", scores = ms).
-- ARGV: now (ms), nonce, lease slots wanted, longest lease (ms), lease share, fewest
-- slots worth a lease, then per rule: limit, period (ms), count (1|0).
-- Returns {allowed, rule index (1-based), remaining, reset ms, first refusal,
-- lease slots granted, lease lifetime ms}. A lease's slots are members
-- "<member>:1".."<member>:<granted>" of every counted key, scored at the lease's
-- end (issuer.ratelimit.leases); every key lives its window plus a lease lifetime.
local now = tonumber(ARGV[1])
local member = ARGV[1] .. ':' .. ARGV[2]
local want = tonumber(ARGV[3])
local longest = tonumber(ARGV[4])
local base = 6
local sizes = {}
local lifetime = longest
for i = 1, #KEYS do
  local limit = tonumber(ARGV[base + 3 * i - 2])
  local period = tonumber(ARGV[base + 3 * i - 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  local size = redis.call('ZCARD', KEYS[i])
  if size >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + period - now
    local marker = KEYS[i] .. ':refused'
    local first = 0
    if tonumber(redis.call('GET', marker) or '0') <= now then
      redis.call('SET', marker, now + wait, 'PX', math.max(wait, 1))
      first = 1
    end
    return {0, i, 0, wait, first, 0, 0}
  end
  sizes[i] = size
  if ARGV[base + 3 * i] == '1' then
    lifetime = math.min(lifetime, math.floor(period / 100))
    want = math.min(want, math.floor((limit - size - 1) / tonumber(ARGV[5])))
  end
end
local grant = 0
if want >= tonumber(ARGV[6]) then grant = want end
local slots = {}
for j = 1, grant do
  slots[2 * j - 1] = now + lifetime
  slots[2 * j] = member .. ':' .. j
end
local best, best_remaining, best_reset, best_counted = 1, nil, 0, false
for i = 1, #KEYS do
  local limit = tonumber(ARGV[base + 3 * i - 2])
  local period = tonumber(ARGV[base + 3 * i - 1])
  local counted = ARGV[base + 3 * i] == '1'
  if counted then
    redis.call('ZADD', KEYS[i], now, member)
    if grant > 0 then redis.call('ZADD', KEYS[i], unpack(slots)) end
    redis.call('PEXPIRE', KEYS[i], period + math.min(longest, math.floor(period / 100)))
    sizes[i] = sizes[i] + 1 + grant
  end
  local remaining = limit - sizes[i]
  if counted then remaining = remaining + grant end
  if best_remaining == nil or (counted and ((not best_counted) or remaining < best_remaining)) then
    local reset = 0
    if sizes[i] > 0 then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      reset = tonumber(oldest[2]) + period - now
    end
    best, best_remaining, best_reset, best_counted = i, remaining, reset, counted
  end
end
return {1, best, best_remaining, best_reset, 0, grant, lifetime}
