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
local now = now_ms(ARGV[1])
local f = read_task(KEYS[1], { 'status', 'priority', 'parent', 'total' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status, id = f[1], ARGV[3]
if not status then return { -1, '' } end
if (status ~= 'failed' and status ~= 'cancelled') or f[4] then return { -2, status } end
local priority = ARGV[4] ~= '' and ARGV[4] or f[2]
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'priority', priority, 'enqueued_at', now,
  'attempt', 0, 'stalls', 0, 'error', '', 'traceback', '', 'finished_at', '', 'worker', '')
redis.call('DEL', KEYS[9])
-- The waiter list still holds the old outcome: a new wait must block for the new one.
redis.call('DEL', KEYS[13])
redis.call('ZREM', status == 'failed' and KEYS[6] or KEYS[7], id)
redis.call('ZADD', KEYS[8], now, id)
enqueue(priority, id, false)
redis.call('ZADD', KEYS[10], 0, '0')
emit(KEYS[11], KEYS[12], ARGV[2], 'task.status_changed', id, 'pending',
  { reason = 'retried', previous = status })
child_reopened(f[3], status, now, ARGV[2])
flush_events()
return { 1, status }
