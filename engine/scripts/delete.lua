--[[ delete: remove tasks and every trace of them (queues, indexes, leases, results).
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] leases           KEYS[8] result key prefix
  KEYS[9..15] status:pending, scheduled, running, completed, failed, retry, cancelled
  KEYS[16] events:log       KEYS[17] events (channel)    KEYS[18] routed
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3..] task ids
  Returns: how many tasks existed and were deleted (ids without a task are still removed
           from the indexes, which is how stale index entries get cleaned).
]]
local now = now_ms(ARGV[1])
local index = { pending = 9, scheduled = 10, running = 11, completed = 12, failed = 13,
  retry = 14, cancelled = 15 }
local deleted = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local f = read_task(KEYS[1] .. id, { 'status', 'priority' }) or { 'corrupt' }
  if f[1] == 'pending' then dequeue(f[2], id, KEYS[18]) end
  redis.call('ZREM', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
  for _, k in pairs(index) do redis.call('ZREM', KEYS[k], id) end
  redis.call('DEL', KEYS[8] .. id)
  if redis.call('DEL', KEYS[1] .. id) == 1 then
    deleted = deleted + 1
    local was = f[1] or 'missing'
    if not (was == 'missing' or is_status(was)) then was = 'corrupt' end   -- a record's own text
    emit(KEYS[16], KEYS[17], ARGV[2], 'task.deleted', id, was)
  end
end
flush_events()
return deleted
