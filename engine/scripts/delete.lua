--[[ delete: remove tasks and every trace of them (queues, indexes, leases, results).
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] leases           KEYS[8] result key prefix
  KEYS[9..15] status:pending, status:scheduled, status:running, status:completed, status:failed, status:retry, status:cancelled
  KEYS[16] events:log       KEYS[17] events (channel)    KEYS[18] routed
  KEYS[19] partial: prefix of the streamed text keys
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3..] task ids
  Returns: how many tasks existed and were deleted (ids without a task are still removed
           from the indexes, which is how stale index entries get cleaned).
]]
local TASK_PREFIX, SCHEDULED, LEASES, RESULT_PREFIX = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local EVENTS_LOG, CHANNEL, ROUTED, PARTIAL_PREFIX = KEYS[16], KEYS[17], KEYS[18], KEYS[19]
local now_arg, maxlen = ARGV[1], ARGV[2]
local now = now_ms(now_arg)
local index = { pending = 9, scheduled = 10, running = 11, completed = 12, failed = 13,
  retry = 14, cancelled = 15 }
local deleted = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local f = read_task(TASK_PREFIX .. id, { 'status', 'priority', 'group' }) or { 'corrupt' }
  if f[1] == 'pending' then dequeue(f[2], id, ROUTED, f[3]) end
  redis.call('ZREM', SCHEDULED, id)
  redis.call('ZREM', LEASES, id)
  for _, k in pairs(index) do redis.call('ZREM', KEYS[k], id) end
  redis.call('DEL', RESULT_PREFIX .. id, PARTIAL_PREFIX .. id)
  if redis.call('DEL', TASK_PREFIX .. id) == 1 then
    deleted = deleted + 1
    local was = f[1] or 'missing'
    if not (was == 'missing' or is_status(was)) then was = 'corrupt' end   -- a record's own text
    emit(EVENTS_LOG, CHANNEL, maxlen, 'task.deleted', id, was)
  end
end
flush_events()
return deleted
