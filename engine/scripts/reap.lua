--[[ reap: tasks whose lease ran out (their worker died or froze) → pending again, or
  failed once they have stalled more than the limit; workers silent too long → lost.
  A record that cannot be put back (corrupt attempt or priority, a key of another type)
  is dead-lettered instead (lib.lua: bury).
  KEYS[1]  task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  leases            KEYS[7] status:running   KEYS[8] status:pending
  KEYS[9]  status:failed     KEYS[10] result key prefix  KEYS[11] waiter list prefix
  KEYS[12] marker            KEYS[13] events:log      KEYS[14] events (channel)
  KEYS[15] stats             KEYS[16] workers         KEYS[17] worker hash prefix
  KEYS[18] limit key prefix (a reaped call's place under its provider limit key is freed)
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] most stalls before a task fails   ARGV[4] most leases handled in one call
  ARGV[5] TTL of a failed task in ms        ARGV[6] worker silence before it is lost, ms
  Returns: {requeued, failed, workers marked lost, expired leases handled}; the caller
           calls again while the last equals ARGV[4] (a backlog left after a mass crash).
]]
local TASK_PREFIX, LEASES, STATUS_RUNNING, STATUS_PENDING = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local STATUS_FAILED, RESULT_PREFIX, WAITERS_PREFIX, MARKER = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local EVENTS_LOG, CHANNEL, STATS, WORKERS = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local WORKER_PREFIX, LIMIT_PREFIX = KEYS[17], KEYS[18]
local now_arg, maxlen, max_stalls, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, silence_ms = ARGV[5], ARGV[6]
local now = now_ms(now_arg)
max_stalls = tonumber(max_stalls)
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, tonumber(limit))
local requeued, failed = 0, 0

local function give_up(key, id, f, stalls, why)
  local err = 'task stalled ' .. stalls .. ' times: its worker stopped heartbeating ' ..
    '(killed, frozen or cut off) while running it'
  local doc = cjson.encode({ task_id = id, status = 'failed', error = err, reason = 'stalled',
    attempts = tonumber(f[3] or '0'), duration = 0 })
  redis.call('HSET', key, 'status', 'failed', 'error', err, 'finished_at', now, 'reason', 'stalled')
  store_end(key, RESULT_PREFIX .. id, WAITERS_PREFIX .. id, doc, ttl, f[5])
  redis.call('ZADD', STATUS_FAILED, now, id)
  redis.call('HINCRBY', STATS, 'failed', 1)
  emit(EVENTS_LOG, CHANNEL, maxlen, 'task.failed', id, 'failed', why)
  child_ended(f[6], 'failed', now, maxlen, ttl)
end

for _, id in ipairs(expired) do
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'status', 'priority', 'attempt', 'worker', 'waiters', 'parent', 'stalls',
    'group', 'limit_key' })
  redis.call('ZREM', LEASES, id)
  local field = misfit(key, f, 'running')
  if field == 'ok' then
    if queue_index(f[2]) == 4 and f[2] ~= '0' then field = 'priority'
    elseif not is_count(f[3], true) then field = 'attempt'
    elseif not is_count(f[7], true) then field = 'stalls' end
  end
  if field == 'ok' then
    redis.call('ZREM', STATUS_RUNNING, id)
    if f[9] then redis.pcall('ZREM', LIMIT_PREFIX .. f[9] .. ':inflight', id) end
    local stalls = tonumber(f[7] or '0') + 1
    redis.call('HSET', key, 'stalls', stalls)
    local why = { reason = 'lease expired', worker_id = f[4] or '' }
    if stalls > max_stalls then
      give_up(key, id, f, stalls, why)
      failed = failed + 1
    else
      -- The stall is not the handler's failure: give the attempt back.
      redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now, 'worker', '',
        'attempt', math.max(0, tonumber(f[3] or '1') - 1))
      enqueue(f[2], id, true, f[8])
      redis.call('ZADD', STATUS_PENDING, now, id)
      emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending', why)
      requeued = requeued + 1
    end
  elseif field == 'ghost' then
    redis.call('ZREM', STATUS_RUNNING, id)
  elseif field ~= 'stale' then
    bury(key, id, field, STATUS_RUNNING, STATUS_FAILED, STATS, now, maxlen, ttl)
    failed = failed + 1
  end
end
if requeued > 0 then redis.call('ZADD', MARKER, 0, '0') end
local silent = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', now - tonumber(silence_ms), 'LIMIT', 0, 100)
for _, worker in ipairs(silent) do
  redis.call('ZREM', WORKERS, worker)
  redis.pcall('HSET', WORKER_PREFIX .. worker, 'state', 'lost', 'lost_at', now)   -- even if corrupt
  emit_data(EVENTS_LOG, CHANNEL, maxlen, 'worker.lost', { worker_id = worker })
end
flush_events()
return { requeued, failed, #silent, #expired }
