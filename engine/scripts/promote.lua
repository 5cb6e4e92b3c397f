--[[ promote: scheduled / retry tasks whose due time has come → pending.
  Idempotent and atomic: however many workers and schedulers run it, a due task moves once.
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] status:pending   KEYS[8] status:scheduled
  KEYS[9] status:retry      KEYS[10] marker          KEYS[11] events:log
  KEYS[12] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] most tasks moved in one call
  Returns: {moved, ms until the next due task (-1 when none is scheduled)}.
]]
local now = now_ms(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(due) do
  local key = KEYS[1] .. id
  local f = redis.call('HMGET', key, 'status', 'priority')
  if f[1] == 'scheduled' or f[1] == 'retry' then
    redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now)
    enqueue(f[2], id, false)
    redis.call('ZREM', f[1] == 'retry' and KEYS[9] or KEYS[8], id)
    redis.call('ZADD', KEYS[7], now, id)
    emit(KEYS[11], KEYS[12], ARGV[2], 'task.status_changed', id, 'pending')
    moved = moved + 1
  end
end
if #due > 0 then bulk('ZREM', KEYS[6], due) end
if moved > 0 then redis.call('ZADD', KEYS[10], 0, '0') end
flush_events()
local next_due = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if next_due[2] then return { moved, math.max(0, tonumber(next_due[2]) - now) } end
return { moved, -1 }
