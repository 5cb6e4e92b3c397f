--[[ claim: pending → running for up to COUNT tasks, highest priority first, FIFO within one.
  Each claimed task gets a lease (deadline in `leases`), attempt + 1 and a new fencing
  token; the worker must present the token to complete, fail, renew or release it.
  A worker takes only the task types it has handlers for while another live worker has a
  handler for the type: such a task is set aside, still pending, in `routed`, where the
  workers of its type look first. So is a type no live worker handles but one handled
  within the grace (`handled`, written by heartbeat.lua): a rolling deploy's gap between
  the old worker and the new. Past it, the type is claimed as before (the worker fails it:
  "no handler for task type X").
  Every popped record is checked before anything is written about it (lib.lua: misfit,
  unusable below): a ghost id is dropped from status:pending, a stale one skipped, and a
  corrupt one dead-lettered ("corrupt record: <field>") while the rest are claimed.
  KEYS[1]  task key prefix
  KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  status:pending    KEYS[7]  status:running   KEYS[8]  leases
  KEYS[9]  marker            KEYS[10] events:log       KEYS[11] events (channel)
  KEYS[12] minute stats prefix   KEYS[13] routed   KEYS[14] workers
  KEYS[15] worker hash prefix    KEYS[16] status:failed   KEYS[17] stats
  KEYS[18] handled
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  worker id   ARGV[4] COUNT   ARGV[5] lease length in ms
  ARGV[6]  how recent a worker's heartbeat must be for it to count as live, in ms
  ARGV[7]  TTL of a dead-lettered (corrupt) task in ms
  ARGV[8]  handler grace in ms (how long a type handled lately waits for its workers)
  ARGV[9..] the task types this worker has handlers for
  Errors: OOM when Redis is out of memory (nothing claimed).
  Returns: a flat array, 13 values per claimed task: id, token, type, priority, payload,
           attempt, max_retries, retry_delay, backoff, max_retry_delay, session, timeout,
           created_at; empty when nothing is pending.
]]
local TASK_PREFIX, STATUS_PENDING, STATUS_RUNNING, LEASES = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local MARKER, EVENTS_LOG, CHANNEL, MINUTE_PREFIX = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local ROUTED, WORKERS, WORKER_PREFIX, STATUS_FAILED = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local STATS, HANDLED = KEYS[17], KEYS[18]
local now_arg, maxlen, worker, want = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lease_ms, live_ms, failed_ttl, grace_ms = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local now = now_ms(now_arg)
want = tonumber(want)
local deadline = string.format('%d', now + tonumber(lease_ms))
local out, ids, running, leases, waits = {}, {}, {}, {}, {}
local need = want
local FIELDS = { 'status', 'type', 'priority', 'payload', 'attempt', 'max_retries',
  'retry_delay', 'backoff', 'max_retry_delay', 'session', 'timeout', 'created_at', 'fence',
  'enqueued_at' }

-- The first write is one that Redis refuses when it is out of memory (LPOP, which frees
-- memory, is allowed), so that a full Redis refuses the whole claim: a worker whose
-- results cannot be written takes no more work. It records when this worker last claimed.
local stamped = redis.pcall('HSET', WORKER_PREFIX .. worker, 'last_claim', NOW_TEXT)
if type(stamped) == 'table' and stamped.err and string.find(stamped.err, 'OOM', 1, true) then
  return redis.error_reply(stamped.err)
end

local worker_json = ',"worker_id":' .. cjson.encode(worker) .. ',"attempt":'   -- every event's

local mine = {}
for i = 9, #ARGV do mine[ARGV[i]] = true end

-- Whether another live worker has a handler for type t (asked only for types not ours,
-- so the common claim never reads the worker registry).
local others, served = nil, {}
local function handled_elsewhere(t)
  if served[t] == nil then
    if not others then
      others = redis.call('ZRANGEBYSCORE', WORKERS, now - tonumber(live_ms), '+inf')
    end
    served[t] = false
    for _, w in ipairs(others) do
      -- A registry entry that is not a hash, or not JSON, serves nothing (and raises nothing).
      local types = w ~= worker and redis.pcall('HGET', WORKER_PREFIX .. w, 'types')
      local ok, names = pcall(cjson.decode, type(types) == 'string' and types or '[]')
      if ok and type(names) == 'table' then
        for _, name in ipairs(names) do
          if name == t then served[t] = true end
        end
      end
    end
  end
  return served[t]
end

-- Whether a live worker handled type t within the grace (a deploy under way).
local function handled_lately(t)
  local at = redis.pcall('HGET', HANDLED, t)
  return type(at) == 'string' and (tonumber(at) or 0) > now - tonumber(grace_ms)
end

local function ours(t)
  return mine[t] or not (handled_elsewhere(t) or handled_lately(t))
end

-- The first field of a pending record (FIELDS order) that this script computes with and
-- cannot use, or nil. Fields only the worker parses (the payload's JSON, max_retries, the
-- retry policy, timeout, created_at) are the worker's to check (engine/worker.py:
-- running_task), which keeps this per-task check to a few comparisons.
local function unusable(f)
  if not f[2] or f[2] == '' then return 'type' end
  if queue_index(f[3]) == 4 and f[3] ~= '0' then return 'priority' end
  if not f[4] then return 'payload' end
  if f[5] and not is_count(f[5]) then return 'attempt' end
  if f[13] and not is_count(f[13]) then return 'fence' end
  if f[14] and not is_count(f[14]) then return 'enqueued_at' end
  return nil
end

-- Whether a record popped from a list (or found in `routed`) can be claimed; a ghost, a
-- stale entry or a corrupt record is dealt with here and answers false.
local function claimable(id, key, f)
  local field = misfit(key, f, 'pending')
  if field == 'ok' then field = unusable(f) end
  if field == nil then return true end
  if field == 'ghost' then
    redis.call('ZREM', STATUS_PENDING, id)     -- its index entry would count as pending for ever
  elseif field ~= 'stale' then
    bury(key, id, field, STATUS_PENDING, STATUS_FAILED, STATS, now, maxlen, failed_ttl)
  end
  return false
end

local function take(id, key, f)
  local attempt = string.format('%d', tonumber(f[5] or '0') + 1)
  local token = string.format('%d', tonumber(f[13] or '0') + 1)
  redis.call('HSET', key, 'status', 'running', 'attempt', attempt, 'fence', token,
    'worker', worker, 'started_at', NOW_TEXT)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = id, token, f[2], f[3], f[4]
  out[n + 6], out[n + 7], out[n + 8], out[n + 9] = attempt, f[6], f[7], f[8]
  out[n + 10], out[n + 11], out[n + 12], out[n + 13] = f[9], f[10], f[11], f[12]
  ids[#ids + 1] = id
  running[#running + 1] = NOW_TEXT
  running[#running + 1] = id
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  local w = string.format('wait:%d', bucket(now - (tonumber(f[14] or f[12]) or now)))
  waits[w] = (waits[w] or 0) + 1
  emit(EVENTS_LOG, CHANNEL, maxlen, 'task.status_changed', id, 'running', worker_json .. attempt)
  need = need - 1
end

-- Tasks set aside for a type come first: they have waited once already.
if redis.call('LLEN', ROUTED) > 0 then
  for _, id in ipairs(redis.call('LRANGE', ROUTED, 0, 199)) do
    if need <= 0 then break end
    local key = TASK_PREFIX .. id
    local f = read_task(key, FIELDS)
    if not claimable(id, key, f) then
      redis.call('LREM', ROUTED, 1, id)     -- a stale, ghost or corrupt entry
    elseif ours(f[2]) then
      redis.call('LREM', ROUTED, 1, id)
      take(id, key, f)
    end
  end
end

-- A list is popped again for what was set aside, up to a bound that keeps one call short
-- however many tasks of other workers' types lie ahead.
local set_aside = 0
for q = 2, 5 do
  while need > 0 and set_aside < 1000 do
    local popped = redis.call('LPOP', KEYS[q], need)
    if not popped then break end
    for _, id in ipairs(popped) do
      local key = TASK_PREFIX .. id
      local f = read_task(key, FIELDS)
      if claimable(id, key, f) then
        if ours(f[2]) then
          take(id, key, f)
        else
          redis.call('RPUSH', ROUTED, id)
          set_aside = set_aside + 1
        end
      end
    end
  end
end
if #ids > 0 then
  bulk('ZREM', STATUS_PENDING, ids)
  bulk('ZADD', STATUS_RUNNING, running)
  bulk('ZADD', LEASES, leases)
  bump_minute(MINUTE_PREFIX, now, waits)
end
-- A full batch means more may be waiting: leave the marker so another worker wakes too.
if need <= 0 or set_aside > 0 then redis.call('ZADD', MARKER, '0', '0') end
-- A task set aside wakes every other live worker too (one marker member each, as a
-- blocking pop takes one; '0' above is for this worker's own next wait): those of its
-- type are among them, and look in `routed` first.
if set_aside > 0 then
  for _, w in ipairs(others) do
    if w ~= worker then redis.call('ZADD', MARKER, '0', w) end
  end
end
flush_events()
return out
