--[[ defer: running → pending (parked on its limit key) or → retry (due when the limit
  frees), for tasks a provider answered "slow down" (HTTP 429) or whose handler raised
  RateLimited. Not a failed attempt: the attempt count is given back and the task records
  why it waits (limited_by, limited_until, deferred_since). The key is paused for every
  worker until the provider's time (a 429 from a provider that sends no rate headers also
  halves the pace learnt for the key, at most once a second) and the 429 is kept in the
  key's last twenty. A task that has waited past the horizon fails ("rate limited out").
  KEYS[1]  task key prefix    KEYS[2]  limit key prefix   KEYS[3]  limits:due
  KEYS[4]  limits             KEYS[5]  status:running     KEYS[6]  status:pending
  KEYS[7]  status:retry       KEYS[8]  status:failed      KEYS[9]  leases
  KEYS[10] scheduled          KEYS[11] events:log         KEYS[12] events (channel)
  KEYS[13] stats              KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  horizon in ms   ARGV[4] TTL of a failed task in ms
  ARGV[5..] 6 values per task: id, token, limit key, ms until the limit frees, '1' to park
           it on the key (a worker claims tasks under that key) or '0' to make it due
           then, '1' when the provider sent rate headers else '0'
  Returns: one code per task: 1 deferred, 2 failed (past the horizon), -3 lease lost.
]]
local TASK_PREFIX, LIMIT_PREFIX, LIMITS_DUE, LIMITS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local STATUS_RUNNING, STATUS_PENDING, STATUS_RETRY, STATUS_FAILED = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local LEASES, SCHEDULED, EVENTS_LOG, CHANNEL, STATS = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local now_arg, maxlen, horizon_ms, failed_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
horizon_ms = tonumber(horizon_ms)
local STRIDE = 6
local KEEP_429S = 20

-- What a 429 teaches key K: paused until free_at; without rate headers, half the pace.
local function slow_down(K, free_at, delay, headers)
  local key = LIMIT_PREFIX .. K
  local h = limit_fields(key)
  local set = {}
  if free_at > (tonumber(h[9]) or 0) then set[#set + 1] = 'paused_until'; set[#set + 1] = free_at end
  if headers ~= '1' and now - (tonumber(h[11]) or 0) > 1000 then
    local pace = tonumber(h[6]) or (tonumber(h[1]) or SLOW_START_RPM) / 60
    set[#set + 1] = 'pace_rps'
    set[#set + 1] = string.format('%.6f', math.max(0.05, pace / 2))
    set[#set + 1] = 'cut_at'
    set[#set + 1] = NOW_TEXT
  end
  if #set > 0 then redis.pcall('HSET', key, unpack(set)) end
  redis.call('LPUSH', key .. ':429s', cjson.encode({ at = now, retry_after_ms = delay }))
  redis.call('LTRIM', key .. ':429s', 0, KEEP_429S - 1)
  redis.call('ZADD', LIMITS, NOW_TEXT, K)
end

local codes = {}
for i = 5, #ARGV - STRIDE + 1, STRIDE do
  local id, token, K, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]) or 1000
  local to_park, headers = ARGV[i + 4] == '1', ARGV[i + 5]
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'fence', 'status', 'attempt', 'priority', 'enqueued_at',
    'created_at', 'deferred_since' })
  if not f or f[1] ~= token or f[2] ~= 'running' then
    codes[#codes + 1] = -3
  else
    local free_at = now + math.max(0, delay)
    slow_down(K, free_at, delay, headers)
    redis.call('ZREM', LIMIT_PREFIX .. K .. ':inflight', id)
    redis.call('ZREM', LEASES, id)
    local attempt = is_count(f[3]) and math.max(0, tonumber(f[3]) - 1) or 0
    redis.call('HSET', key, 'attempt', attempt, 'worker', '')
    local since = tonumber(f[7])
    if since and now - since > horizon_ms then
      dead_letter(key, id, 'rate limited out: waited for ' .. K .. ' past the horizon of '
        .. math.floor(horizon_ms / 1000) .. ' s', 'rate limited out', STATUS_RUNNING,
        STATUS_FAILED, STATS, now, maxlen, failed_ttl)
      codes[#codes + 1] = 2
    else
      redis.call('ZREM', STATUS_RUNNING, id)
      local info = { reason = 'rate limited', limited_by = K, limited_until = free_at }
      if to_park then
        redis.call('HSET', key, 'status', 'pending')
        redis.call('ZADD', STATUS_PENDING, NOW_TEXT, id)
        park(key, id, f[4], LIMIT_PREFIX, LIMITS_DUE, K, free_at)
        emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending', info)
      else
        local due = string.format('%d', free_at)
        redis.call('HSET', key, 'status', 'retry', 'due_at', due, 'limited_by', K,
          'limited_until', due)
        redis.call('HSETNX', key, 'deferred_since', NOW_TEXT)
        redis.call('ZADD', SCHEDULED, due, id)
        redis.call('ZADD', STATUS_RETRY, NOW_TEXT, id)
        emit(EVENTS_LOG, CHANNEL, maxlen, 'task.retry', id, 'retry', info)
      end
      codes[#codes + 1] = 1
    end
  end
end
flush_events()
return codes
