--[[ wait: register interest in a task's end, atomically with reading whether it ended.
  A finishing script pushes the result document to the waiter list only when the task
  hash carries `waiters`, so tasks nobody waits on cost nothing extra. When the task has
  ended already, the document is put in the waiter list here, so that a blocking read
  pipelined behind this call returns at once.
  KEYS[1] task key   KEYS[2] result key   KEYS[3] waiter list
  ARGV[1] now override (unused, kept for the common ARGV layout)   ARGV[2] unused
  Returns: {status, result document or ''}; {'', ''} when there is no such task.
]]
local status = redis.pcall('HGET', KEYS[1], 'status')
if type(status) ~= 'string' then return { '', '' } end   -- no such task, or not a task hash
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  local doc = redis.call('GET', KEYS[2]) or ''
  if doc ~= '' and redis.call('LLEN', KEYS[3]) == 0 then
    redis.call('RPUSH', KEYS[3], doc)
    redis.call('PEXPIRE', KEYS[3], 60000)
  end
  return { status, doc }
end
redis.call('HSET', KEYS[1], 'waiters', 1)
return { status, '' }
