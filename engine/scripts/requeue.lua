--[[ requeue: put an unfinished task back in line now (scheduled, retry or running → pending),
  or move a pending task to another priority. A running task's worker loses its lease.
  KEYS[1] task key          KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] leases            KEYS[8] status:pending
  KEYS[9] status:scheduled  KEYS[10] status:retry     KEYS[11] status:running
  KEYS[12] marker           KEYS[13] events:log       KEYS[14] events (channel)
  KEYS[15] routed
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] task id   ARGV[4] new priority ('' = keep)
  Returns: {-4, ''} the key is not a task hash (corrupt: delete it);
           {1, previous status}; {-1, ''} no such task; {-2, status} already finished.
]]
local TASK_KEY, SCHEDULED, LEASES, STATUS_PENDING = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local MARKER, EVENTS_LOG, CHANNEL, ROUTED = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local now_arg, maxlen, id, new_priority = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
local f = read_task(TASK_KEY, { 'status', 'priority', 'group' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status = f[1]
if not status then return { -1, '' } end
local index = { pending = 8, scheduled = 9, retry = 10, running = 11 }
if not index[status] then return { -2, status } end
local priority = new_priority ~= '' and new_priority or f[2]
if status == 'pending' then dequeue(f[2], id, ROUTED, f[3]) end
if status == 'scheduled' or status == 'retry' then redis.call('ZREM', SCHEDULED, id) end
if status == 'running' then redis.call('ZREM', LEASES, id) end
redis.call('ZREM', KEYS[index[status]], id)
redis.call('HSET', TASK_KEY, 'status', 'pending', 'priority', priority, 'enqueued_at', now, 'worker', '')
redis.call('ZADD', STATUS_PENDING, now, id)
enqueue(priority, id, false, f[3])
redis.call('ZADD', MARKER, 0, '0')
emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending',
  { reason = 'requeued', previous = status })
flush_events()
return { 1, status }
