--[[ wait: register interest in a task's end, atomically with reading whether it ended.
  A finishing script pushes the result document to the waiter list only when the task
  hash carries `waiters`, so tasks nobody waits on cost nothing extra.
  KEYS[1] task key   KEYS[2] result key
  ARGV[1] now override (unused, kept for the common ARGV layout)   ARGV[2] unused
  Returns: {status, result document or ''}; {'', ''} when there is no such task.
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return { '', '' } end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return { status, redis.call('GET', KEYS[2]) or '' }
end
redis.call('HSET', KEYS[1], 'waiters', 1)
return { status, '' }
