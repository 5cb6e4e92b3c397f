--[[ complete: running → completed, for a batch of tasks (one call per batch of results).
  KEYS[1]  task key prefix   KEYS[2] result key prefix   KEYS[3] waiter list prefix
  KEYS[4]  status:running    KEYS[5] status:completed    KEYS[6] leases
  KEYS[7]  events:log        KEYS[8] events (channel)    KEYS[9] stats
  KEYS[10] minute stats prefix
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  TTL of result and task in ms   ARGV[4] most finished ids kept in the index
  ARGV[5]  number of tasks N
  ARGV[6..] per task, 4 values: id, token, result document (JSON), duration in ms
  Returns: one code per task: 1 completed, -3 lease lost (token stale or task no longer
           running: another worker has it, or it was cancelled, requeued or deleted).
]]
local TASK_PREFIX, RESULT_PREFIX, WAITERS_PREFIX, STATUS_RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local STATUS_COMPLETED, LEASES, EVENTS_LOG, CHANNEL = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local STATS, MINUTE_PREFIX = KEYS[9], KEYS[10]
local now_arg, maxlen, ttl, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = ARGV[5]
local now = now_ms(now_arg)
keep, n = tonumber(keep), tonumber(n)
local codes, ids, entered, counts = {}, {}, {}, {}
for i = 0, n - 1 do
  local b = 6 + i * 4
  local id, doc = ARGV[b], ARGV[b + 2]
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'fence', 'status', 'waiters', 'parent' })
  if f and f[1] == ARGV[b + 1] and f[2] == 'running' then
    redis.call('HSET', key, 'status', 'completed', 'finished_at', NOW_TEXT, 'duration_ms', ARGV[b + 3],
      'reason', 'completed')
    store_end(key, RESULT_PREFIX .. id, WAITERS_PREFIX .. id, doc, ttl, f[3])
    ids[#ids + 1] = id
    entered[#entered + 1] = NOW_TEXT
    entered[#entered + 1] = id
    local r = string.format('run:%d', bucket(tonumber(ARGV[b + 3])))
    counts[r] = (counts[r] or 0) + 1
    emit(EVENTS_LOG, CHANNEL, maxlen, 'task.completed', id, 'completed')
    codes[#codes + 1] = 1
    if f[4] then child_ended(f[4], 'completed', now, maxlen, ttl) end
  else
    codes[#codes + 1] = -3
  end
end
if #ids > 0 then
  bulk('ZREM', STATUS_RUNNING, ids)
  bulk('ZREM', LEASES, ids)
  bulk('ZADD', STATUS_COMPLETED, entered)
  -- Keep the finished index bounded: entries older than the TTL point at expired tasks.
  redis.call('ZREMRANGEBYSCORE', STATUS_COMPLETED, '-inf', now - tonumber(ttl))
  if keep > 0 then redis.call('ZREMRANGEBYRANK', STATUS_COMPLETED, 0, -keep - 1) end
  redis.call('HINCRBY', STATS, 'completed', #ids)
  counts['completed'] = #ids
  bump_minute(MINUTE_PREFIX, now, counts)
end
flush_events()
return codes
