--[[ fail: running → retry (attempts left) or failed (dead letter), for a batch of tasks.
  KEYS[1]  task key prefix   KEYS[2] result key prefix   KEYS[3] waiter list prefix
  KEYS[4]  status:running    KEYS[5] status:retry        KEYS[6] status:failed
  KEYS[7]  leases            KEYS[8] scheduled           KEYS[9] events:log
  KEYS[10] events (channel)  KEYS[11] stats              KEYS[12] minute stats prefix
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  TTL of a failed task and its result in ms   ARGV[4] number of tasks N
  ARGV[5..] per task, 7 values: id, token, error, traceback, retry delay in ms
           (-1 = do not retry: a permanent error), result document for a final failure,
           why it ended (error, timeout; the task hash keeps it as `reason`)
  Returns: one code per task: 2 scheduled for retry, 1 failed for good, -3 lease lost.
]]
local TASK_PREFIX, RESULT_PREFIX, WAITERS_PREFIX, STATUS_RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local STATUS_RETRY, STATUS_FAILED, LEASES, SCHEDULED = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local EVENTS_LOG, CHANNEL, STATS, MINUTE_PREFIX = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local now_arg, maxlen, ttl, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
n = tonumber(n)
local codes, done, retrying, failed = {}, {}, {}, {}
for i = 0, n - 1 do
  local b = 5 + i * 7
  local id, err, delay, doc = ARGV[b], ARGV[b + 2], tonumber(ARGV[b + 4]), ARGV[b + 5]
  local reason = ARGV[b + 6]
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'fence', 'status', 'attempt', 'max_retries', 'waiters', 'parent' })
  if not f or f[1] ~= ARGV[b + 1] or f[2] ~= 'running' then
    codes[#codes + 1] = -3
  else
    done[#done + 1] = id
    local extra = { attempt = tonumber(f[3]), error = err, reason = reason }
    -- Corrupt counts (claim checked them; an operator's HSET may not have) end the task.
    if delay >= 0 and is_count(f[3]) and is_count(f[4]) and tonumber(f[3]) <= tonumber(f[4]) then
      local due = string.format('%d', now + delay)
      redis.call('HSET', key, 'status', 'retry', 'error', err, 'traceback', ARGV[b + 3],
        'due_at', due, 'reason', reason)
      redis.call('ZADD', SCHEDULED, due, id)
      retrying[#retrying + 1] = NOW_TEXT
      retrying[#retrying + 1] = id
      emit(EVENTS_LOG, CHANNEL, maxlen, 'task.retry', id, 'retry', extra)
      codes[#codes + 1] = 2
    else
      redis.call('HSET', key, 'status', 'failed', 'error', err, 'traceback', ARGV[b + 3],
        'finished_at', NOW_TEXT, 'reason', reason)
      store_end(key, RESULT_PREFIX .. id, WAITERS_PREFIX .. id, doc, ttl, f[5])
      failed[#failed + 1] = NOW_TEXT
      failed[#failed + 1] = id
      emit(EVENTS_LOG, CHANNEL, maxlen, 'task.failed', id, 'failed', extra)
      codes[#codes + 1] = 1
      child_ended(f[6], 'failed', now, maxlen, ttl)
    end
  end
end
if #done > 0 then
  bulk('ZREM', STATUS_RUNNING, done)
  bulk('ZREM', LEASES, done)
end
local counts = {}
if #retrying > 0 then
  bulk('ZADD', STATUS_RETRY, retrying)
  redis.call('HINCRBY', STATS, 'retried', #retrying / 2)
  counts['retried'] = #retrying / 2
end
if #failed > 0 then
  bulk('ZADD', STATUS_FAILED, failed)
  redis.call('ZREMRANGEBYSCORE', STATUS_FAILED, '-inf', now - tonumber(ttl))
  redis.call('HINCRBY', STATS, 'failed', #failed / 2)
  counts['failed'] = #failed / 2
end
if #done > 0 then bump_minute(MINUTE_PREFIX, now, counts) end
flush_events()
return codes
