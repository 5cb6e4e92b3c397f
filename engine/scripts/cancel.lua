--[[ cancel: any unfinished task → cancelled. A running task's worker finds out at its next
  heartbeat or when it reports, and its report is refused (the task is no longer running).
  KEYS[1]  task key         KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  scheduled        KEYS[7]  leases          KEYS[8]  status:pending
  KEYS[9]  status:scheduled KEYS[10] status:retry    KEYS[11] status:running
  KEYS[12] status:cancelled KEYS[13] result key      KEYS[14] waiter list
  KEYS[15] events:log       KEYS[16] events (channel) KEYS[17] stats
  KEYS[18] routed
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] TTL of the cancelled task in ms   ARGV[4] task id   ARGV[5] result document
  Returns: {-4, ''} the key is not a task hash (corrupt: delete it);
           {1, previous status} cancelled; {-1, ''} no such task;
           {-2, status} already finished (completed, failed or cancelled).
]]
local now = now_ms(ARGV[1])
local f = read_task(KEYS[1], { 'status', 'priority', 'waiters', 'parent', 'total' })
if not f then return { -4, '' } end   -- not a task hash: only delete can clear it
local status, id = f[1], ARGV[4]
if not status then return { -1, '' } end
local index = { pending = 8, scheduled = 9, retry = 10, running = 11 }
if not index[status] or f[5] then return { -2, status } end   -- a batch: cancel its children
if status == 'pending' then dequeue(f[2], id, KEYS[18]) end
if status == 'scheduled' or status == 'retry' then redis.call('ZREM', KEYS[6], id) end
if status == 'running' then redis.call('ZREM', KEYS[7], id) end
redis.call('ZREM', KEYS[index[status]], id)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', now)
store_end(KEYS[1], KEYS[13], KEYS[14], ARGV[5], ARGV[3], f[3])
redis.call('ZADD', KEYS[12], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', now - tonumber(ARGV[3]))   -- keep the index bounded
redis.call('HINCRBY', KEYS[17], 'cancelled', 1)
emit(KEYS[15], KEYS[16], ARGV[2], 'task.cancelled', id, 'cancelled', { previous = status })
child_ended(f[4], 'cancelled', now, ARGV[2], ARGV[3])
flush_events()
return { 1, status }
