--[[ promote: scheduled / retry tasks whose due time has come → pending; and, with aging
  on, pending tasks that have waited longer than the aging time → one priority up.
  Idempotent and atomic: however many workers and schedulers run it, a due task moves once.
  Aging (QUEUE_AGING_SECONDS) lifts a task that has waited `aging` ms in line one level
  (low → normal → high → urgent) to the back of that level's line, and its wait starts
  again, so a steady URGENT stream cannot starve LOW work for ever; a task parked on a
  limit key or set aside for its type keeps its place.
  KEYS[1] task key prefix   KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6] scheduled         KEYS[7] status:pending   KEYS[8] status:scheduled
  KEYS[9] status:retry      KEYS[10] marker          KEYS[11] events:log
  KEYS[12] events (channel) KEYS[13] status:failed   KEYS[14] stats
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] most tasks moved in one call   ARGV[4] TTL of a dead-lettered (corrupt) task in ms
  ARGV[5] aging time in ms ('0': no aging)
  A due id whose record has moved on, or is gone, is dropped; a corrupt one (unknown
  status or priority, a key of another type) is dead-lettered (lib.lua: bury).
  Returns: {moved, ms until the next due task (-1 when none is scheduled)}.
]]
local TASK_PREFIX, SCHEDULED, STATUS_PENDING, STATUS_SCHEDULED = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local STATUS_RETRY, MARKER, EVENTS_LOG, CHANNEL = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local STATUS_FAILED, STATS = KEYS[13], KEYS[14]
local now_arg, maxlen, limit, failed_ttl, aging = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_ms(now_arg)
aging = tonumber(aging) or 0
local due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, tonumber(limit))
local moved = 0
for _, id in ipairs(due) do
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'status', 'priority', 'group' })
  local field = misfit(key, f, 'scheduled', 'retry')
  local index = f and f[1] == 'retry' and STATUS_RETRY or STATUS_SCHEDULED
  if field == 'ok' and queue_index(f[2]) == 4 and f[2] ~= '0' then field = 'priority' end
  if field == 'ok' then
    redis.call('HSET', key, 'status', 'pending', 'enqueued_at', now)
    enqueue(f[2], id, false, f[3])
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

-- Aging: the oldest waiting tasks, a bounded number a call.
local LIFT = { ['0'] = '5', ['5'] = '10', ['10'] = '15' }
if aging > 0 then
  local old = redis.call('ZRANGEBYSCORE', STATUS_PENDING, '-inf', now - aging, 'LIMIT', 0,
    tonumber(limit))
  for _, id in ipairs(old) do
    local key = TASK_PREFIX .. id
    local f = read_task(key, { 'status', 'priority', 'group' })
    local up = f and f[1] == 'pending' and LIFT[f[2]]
    if up then
      local line = KEYS[1 + queue_index(f[2])]
      local grouped = f[3] and redis.call('LREM', line .. ':g:' .. f[3], 1, id) == 1
      if grouped then redis.call('HINCRBY', line .. ':grouped', 'tasks', -1) end
      if grouped or redis.call('LREM', line, 1, id) == 1 then
        redis.call('HSET', key, 'priority', up)
        enqueue(up, id, false, f[3])
        emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'pending',
          { reason = 'aged', priority = tonumber(up) })
        moved = moved + 1
      end
    end
    redis.call('ZADD', STATUS_PENDING, NOW_TEXT, id)    -- its wait starts again
  end
end
if moved > 0 then redis.call('ZADD', MARKER, 0, '0') end
flush_events()
local next_due = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if next_due[2] then return { moved, math.max(0, tonumber(next_due[2]) - now) } end
return { moved, -1 }
