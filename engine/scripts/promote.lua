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
local TASK_PREFIX, SCHEDULED, STATUS_PENDING, STATUS_SCHEDULED = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local STATUS_RETRY, MARKER, EVENTS_LOG, CHANNEL = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local STATUS_FAILED, STATS = KEYS[13], KEYS[14]
local now_arg, maxlen, limit, failed_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
local due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, tonumber(limit))
local moved = 0
for _, id in ipairs(due) do
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'status', 'priority' })
  local field = misfit(key, f, 'scheduled', 'retry')
  local index = f and f[1] == 'retry' and STATUS_RETRY or STATUS_SCHEDULED
  if field == 'ok' and queue_index(f[2]) == 4 and f[2] ~= '0' then field = 'priority' end
  if field == 'ok' then
    redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now)
    enqueue(f[2], id, false)
    redis.call('ZREM', index, id)
    redis.call('ZADD', STATUS_PENDING, now, id)
    emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending')
    moved = moved + 1
  elseif field == 'ghost' then
    redis.call('ZREM', STATUS_SCHEDULED, id)
    redis.call('ZREM', STATUS_RETRY, id)
  elseif field ~= 'stale' then
    bury(key, id, field, index, STATUS_FAILED, STATS, now, maxlen, failed_ttl)
  end
end
if #due > 0 then bulk('ZREM', SCHEDULED, due) end
if moved > 0 then redis.call('ZADD', MARKER, 0, '0') end
flush_events()
local next_due = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if next_due[2] then return { moved, math.max(0, tonumber(next_due[2]) - now) } end
return { moved, -1 }
