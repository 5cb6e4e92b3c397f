--[[ release: a stopping worker hands tasks back (running → pending, front of its queue).
  The attempt is given back too: the task did not get a fair run.
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] leases            KEYS[7] status:running   KEYS[8] status:pending
  KEYS[9] marker            KEYS[10] events:log      KEYS[11] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3..] id/token pairs, in the order they should run again
  Returns: how many tasks were handed back (stale tokens are skipped).
]]
local TASK_PREFIX, LEASES, STATUS_RUNNING, STATUS_PENDING = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local MARKER, EVENTS_LOG, CHANNEL = KEYS[9], KEYS[10], KEYS[11]
local now_arg, maxlen = ARGV[1], ARGV[2]
local now = now_ms(now_arg)
local released = 0
for i = #ARGV - 1, 3, -2 do   -- backwards, so LPUSH keeps their order
  local id = ARGV[i]
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'fence', 'status', 'priority', 'attempt', 'group' })
  if f and f[1] == ARGV[i + 1] and f[2] == 'running' then
    local attempt = is_count(f[4]) and tonumber(f[4]) or 1
    redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now, 'worker', '',
      'attempt', math.max(0, attempt - 1))
    enqueue(f[3], id, true, f[5])
    redis.call('ZREM', LEASES, id)
    redis.call('ZREM', STATUS_RUNNING, id)
    redis.call('ZADD', STATUS_PENDING, now, id)
    emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending', { reason = 'released' })
    released = released + 1
  end
end
if released > 0 then redis.call('ZADD', MARKER, 0, '0') end
flush_events()
return released
