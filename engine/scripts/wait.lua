--[[ wait: register interest in a task's end, atomically with reading whether it ended.
  A finishing script pushes the result document to the waiter list only when the task
  hash carries `waiters`, so tasks nobody waits on cost nothing extra. When the task has
  ended already, the document is put in the waiter list here, so that a blocking read
  pipelined behind this call returns at once.
  KEYS[1] task key   KEYS[2] result key   KEYS[3] waiter list
  ARGV[1] now override (unused, kept for the common ARGV layout)   ARGV[2] unused
  Returns: {status, result document or ''}; {'', ''} when there is no such task.
]]
local TASK_KEY, RESULT_KEY, WAITERS_KEY = KEYS[1], KEYS[2], KEYS[3]
local status = redis.pcall('HGET', TASK_KEY, 'status')
if type(status) ~= 'string' then return { '', '' } end   -- no such task, or not a task hash
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  local doc = redis.call('GET', RESULT_KEY) or ''
  if doc ~= '' and redis.call('LLEN', WAITERS_KEY) == 0 then
    redis.call('RPUSH', WAITERS_KEY, doc)
    redis.call('PEXPIRE', WAITERS_KEY, 60000)
  end
  return { status, doc }
end
redis.call('HSET', TASK_KEY, 'waiters', 1)
return { status, '' }
