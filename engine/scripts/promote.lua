--[[ promote: scheduled / retry tasks whose due time has come → pending.
  Idempotent and atomic: however many workers and schedulers run it, a due task moves once.
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] status:pending   KEYS[8] status:scheduled
  KEYS[9] status:retry      KEYS[10] marker          KEYS[11] events:log
  KEYS[12] events (channel) KEYS[13] status:failed   KEYS[14] stats
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] most tasks moved in one call   ARGV[4] TTL of a dead-lettered (corrupt) task in ms
  A due id whose record has moved on, or is gone, is dropped; a corrupt one (unknown
  status or priority, a key of another type) is dead-lettered (lib.lua: bury).
  Returns: {moved, ms until the next due task (-1 when none is scheduled)}.
]]
local now = now_ms(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(due) do
  local key = KEYS[1] .. id
  local f = read_task(key, { 'status', 'priority' })
  local field = misfit(key, f, 'scheduled', 'retry')
  local index = f and f[1] == 'retry' and KEYS[9] or KEYS[8]
  if field == 'ok' and queue_index(f[2]) == 4 and f[2] ~= '0' then field = 'priority' end
  if field == 'ok' then
    redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now)
    enqueue(f[2], id, false)
    redis.call('ZREM', index, id)
    redis.call('ZADD', KEYS[7], now, id)
    emit(KEYS[11], KEYS[12], ARGV[2], 'task.status_changed', id, 'pending')
    moved = moved + 1
  elseif field == 'ghost' then
    redis.call('ZREM', KEYS[8], id)
    redis.call('ZREM', KEYS[9], id)
  elseif field ~= 'stale' then
    bury(key, id, field, index, KEYS[13], KEYS[14], now, ARGV[2], ARGV[4])
  end
end
if #due > 0 then bulk('ZREM', KEYS[6], due) end
if moved > 0 then redis.call('ZADD', KEYS[10], 0, '0') end
flush_events()
local next_due = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if next_due[2] then return { moved, math.max(0, tonumber(next_due[2]) - now) } end
return { moved, -1 }
