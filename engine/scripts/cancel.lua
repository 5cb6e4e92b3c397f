--[[ cancel: any unfinished task → cancelled. A running task's id is published on the
  cancels channel, which its worker listens to: it stops the handler at once (and would
  find out at its next heartbeat otherwise); its report is refused (no longer running).
  KEYS[1]  task key         KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  scheduled        KEYS[7]  leases          KEYS[8]  status:pending
  KEYS[9]  status:scheduled KEYS[10] status:retry    KEYS[11] status:running
  KEYS[12] status:cancelled KEYS[13] result key      KEYS[14] waiter list
  KEYS[15] events:log       KEYS[16] events (channel) KEYS[17] stats
  KEYS[18] routed           KEYS[19] cancels (channel)
  KEYS[20] limit key prefix (a running call's place under its provider limit key is freed)
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] TTL of the cancelled task in ms   ARGV[4] task id   ARGV[5] result document
  ARGV[6] who cancelled it ('' = not said)   ARGV[7] why
  Returns: {-4, ''} the key is not a task hash (corrupt: delete it);
           {1, previous status} cancelled; {-1, ''} no such task;
           {-2, status} already finished (completed, failed or cancelled).
]]
local TASK_KEY, SCHEDULED, LEASES, STATUS_CANCELLED = KEYS[1], KEYS[6], KEYS[7], KEYS[12]
local RESULT_KEY, WAITERS_KEY, EVENTS_LOG, CHANNEL = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local STATS, ROUTED, CANCELS, LIMIT_PREFIX = KEYS[17], KEYS[18], KEYS[19], KEYS[20]
local now_arg, maxlen, ttl, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local doc, by, why = ARGV[5], ARGV[6], ARGV[7]
local now = now_ms(now_arg)
local f = read_task(TASK_KEY, { 'status', 'priority', 'waiters', 'parent', 'total', 'group',
  'limit_key' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status = f[1]
if not status then return { -1, '' } end
local index = { pending = 8, scheduled = 9, retry = 10, running = 11 }
if not index[status] or f[5] then return { -2, status } end   -- a batch: cancel its children
if status == 'pending' then dequeue(f[2], id, ROUTED, f[6]) end
if status == 'scheduled' or status == 'retry' then redis.call('ZREM', SCHEDULED, id) end
if status == 'running' then
  redis.call('ZREM', LEASES, id)
  if f[7] then redis.pcall('ZREM', LIMIT_PREFIX .. f[7] .. ':inflight', id) end
end
redis.call('ZREM', KEYS[index[status]], id)
redis.call('HSET', TASK_KEY, 'status', 'cancelled', 'finished_at', now, 'reason', 'cancelled',
  'cancelled_by', by, 'cancel_reason', why)
if status == 'running' then redis.call('PUBLISH', CANCELS, id) end
store_end(TASK_KEY, RESULT_KEY, WAITERS_KEY, doc, ttl, f[3])
redis.call('ZADD', STATUS_CANCELLED, now, id)
redis.call('ZREMRANGEBYSCORE', STATUS_CANCELLED, '-inf', now - tonumber(ttl))   -- keep the index bounded
redis.call('HINCRBY', STATS, 'cancelled', 1)
emit(EVENTS_LOG, CHANNEL, maxlen, 'task.cancelled', id, 'cancelled',
  { previous = status, by = by, reason = why })
child_ended(f[4], 'cancelled', now, maxlen, ttl)
flush_events()
return { 1, status }
