--[[ heartbeat: a worker says it is alive and renews the leases of the tasks in its hands.
  KEYS[1] task key prefix   KEYS[2] leases   KEYS[3] workers   KEYS[4] this worker's hash
  KEYS[5] events:log        KEYS[6] events (channel)
  KEYS[7] handled (task type -> when a live worker last handled it; claim.lua's grace)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] worker id   ARGV[4] lease length in ms   ARGV[5] worker hash TTL in ms
  ARGV[6] number of worker fields P   ARGV[7..] P field/value pairs, then id/token pairs
  Returns: a flat array of id/status pairs for tasks this worker no longer holds
           (status 'cancelled', 'missing', or the status another verb moved it to).
]]
local TASK_PREFIX, LEASES, WORKERS, WORKER_KEY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local EVENTS_LOG, CHANNEL, HANDLED = KEYS[5], KEYS[6], KEYS[7]
local now_arg, maxlen, worker, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local record_ttl, n_fields = ARGV[5], ARGV[6]
local now = now_ms(now_arg)
local deadline = now + tonumber(lease_ms)
local p = tonumber(n_fields)
local fields, types = {}, nil
for i = 7, 6 + 2 * p do fields[#fields + 1] = ARGV[i] end
for i = 7, 6 + 2 * p, 2 do
  if ARGV[i] == 'types' then types = ARGV[i + 1] end
end
fields[#fields + 1] = 'last_heartbeat'
fields[#fields + 1] = now
redis.call('HSET', WORKER_KEY, unpack(fields))
redis.call('PEXPIRE', WORKER_KEY, record_ttl)
if redis.call('ZADD', WORKERS, now, worker) == 1 then
  emit_data(EVENTS_LOG, CHANNEL, maxlen, 'worker.started', { worker_id = worker })
end
-- The types this worker handles were handled now: during a rolling deploy, their tasks
-- wait for the next worker of the type instead of failing with "no handler".
local ok, names = pcall(cjson.decode, types or '[]')
if ok and type(names) == 'table' and #names > 0 then
  local seen = {}
  for _, name in ipairs(names) do
    seen[#seen + 1] = tostring(name)
    seen[#seen + 1] = now
  end
  redis.pcall('HSET', HANDLED, unpack(seen))
end
local lost = {}
for i = 7 + 2 * p, #ARGV, 2 do
  local id = ARGV[i]
  local f = read_task(TASK_PREFIX .. id, { 'fence', 'status' }) or { false, 'corrupt' }
  if f[1] == ARGV[i + 1] and f[2] == 'running' then
    redis.call('ZADD', LEASES, 'XX', deadline, id)
  else
    lost[#lost + 1] = id
    lost[#lost + 1] = f[2] or 'missing'
  end
end
flush_events()
return lost
