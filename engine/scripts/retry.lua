--[[ retry: an operator runs a failed or cancelled task again (failed/cancelled → pending),
  with a fresh retry budget.
  KEYS[1] task key          KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] status:failed     KEYS[7] status:cancelled   KEYS[8] status:pending
  KEYS[9] result key        KEYS[10] marker            KEYS[11] events:log
  KEYS[12] events (channel)  KEYS[13] waiter list
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] task id   ARGV[4] new priority ('' = keep)
  Returns: {-4, ''} the key is not a task hash (corrupt: delete it);
           {1, previous status}; {-1, ''} no such task; {-2, status} not failed or cancelled.
]]
local TASK_KEY, STATUS_FAILED, STATUS_CANCELLED, STATUS_PENDING = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local RESULT_KEY, MARKER, EVENTS_LOG, CHANNEL = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local WAITERS_KEY = KEYS[13]
local now_arg, maxlen, id, new_priority = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
local f = read_task(TASK_KEY, { 'status', 'priority', 'parent', 'total', 'group' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status = f[1]
if not status then return { -1, '' } end
if (status ~= 'failed' and status ~= 'cancelled') or f[4] then return { -2, status } end
local priority = new_priority ~= '' and new_priority or f[2]
redis.call('PERSIST', TASK_KEY)
redis.call('HSET', TASK_KEY, 'status', 'pending', 'priority', priority, 'enqueued_at', now,
  'attempt', 0, 'stalls', 0, 'error', '', 'traceback', '', 'finished_at', '', 'worker', '')
redis.call('DEL', RESULT_KEY)
-- The waiter list still holds the old outcome: a new wait must block for the new one.
redis.call('DEL', WAITERS_KEY)
redis.call('ZREM', status == 'failed' and STATUS_FAILED or STATUS_CANCELLED, id)
redis.call('ZADD', STATUS_PENDING, now, id)
enqueue(priority, id, false, f[5])
redis.call('ZADD', MARKER, 0, '0')
emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending',
  { reason = 'retried', previous = status })
child_reopened(f[3], status, now, maxlen)
flush_events()
return { 1, status }
