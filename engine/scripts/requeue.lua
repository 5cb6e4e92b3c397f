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
local now = now_ms(ARGV[1])
local f = read_task(KEYS[1], { 'status', 'priority' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status, id = f[1], ARGV[3]
if not status then return { -1, '' } end
local index = { pending = 8, scheduled = 9, retry = 10, running = 11 }
if not index[status] then return { -2, status } end
local priority = ARGV[4] ~= '' and ARGV[4] or f[2]
if status == 'pending' then dequeue(f[2], id, KEYS[15]) end
if status == 'scheduled' or status == 'retry' then redis.call('ZREM', KEYS[6], id) end
if status == 'running' then redis.call('ZREM', KEYS[7], id) end
redis.call('ZREM', KEYS[index[status]], id)
redis.call('HSET', KEYS[1], 'status', 'pending', 'priority', priority, 'enqueued_at', now, 'worker', '')
redis.call('ZADD', KEYS[8], now, id)
enqueue(priority, id, false)
redis.call('ZADD', KEYS[12], 0, '0')
emit(KEYS[13], KEYS[14], ARGV[2], 'task.status_changed', id, 'pending',
  { reason = 'requeued', previous = status })
flush_events()
return { 1, status }
