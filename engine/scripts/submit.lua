--[[ submit: new tasks → pending (due now) or scheduled (due later).
  KEYS[1]  task key prefix ("{ns}:task:"; task keys are prefix .. id, same hash tag)
  KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  status:pending    KEYS[7]  status:scheduled   KEYS[8]  scheduled
  KEYS[9]  marker            KEYS[10] events:log          KEYS[11] events (channel)
  KEYS[12] stats             KEYS[13] minute stats prefix KEYS[14] idempotency key prefix
  KEYS[15] batch children list prefix
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  number of tasks N                       ARGV[4] idempotency TTL (ms)
  ARGV[5..] per task: id, priority, options, type, payload (JSON), max_retries, P, then P
           more field/value pairs stored as they are (session, timeout, parent, a retry
           policy other than the defaults). options is '' for a plain task (due now), else
           a JSON object with any of: due (epoch ms), delay (ms), idem (idempotency key)
           and fp (its content fingerprint), parent (batch parent id), children (> 0: a
           batch parent, written as 'staging': in no index, its idempotency key not yet
           taken, until open_batch.lua opens it once every child is in), group (its
           fair-share group: it waits in the group's list, lib.lua).
  Returns: the N task ids, in order (an idempotent resubmit returns the first id; an id
           that exists already is returned as it is, and nothing is written for it); in
           place of an id, {existing id} when the idempotency key names a task whose
           content differs (nothing is written for it).
]]
local TASK_PREFIX, STATUS_PENDING, STATUS_SCHEDULED, SCHEDULED = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local MARKER, EVENTS_LOG, CHANNEL, STATS = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local MINUTE_PREFIX, IDEM_PREFIX, CHILDREN_PREFIX = KEYS[13], KEYS[14], KEYS[15]
local now_arg, maxlen, n, idem_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
n = tonumber(n)
local PLAIN = {}
local ids, pending, queued = {}, {}, {}   -- queued: ids by queue, made as needed
local scheduled, entered                  -- made for the first task due later
local submitted, b = 0, 5
for i = 1, n do
  local id, priority = ARGV[b], ARGV[b + 1]
  local o = ARGV[b + 2] == '' and PLAIN or cjson.decode(ARGV[b + 2])
  local last = b + 6 + 2 * tonumber(ARGV[b + 6])
  local existing, differs = false, false
  if o.idem then
    existing, differs = idem_held(IDEM_PREFIX .. o.idem, o.fp)
    if not existing and not o.children then idem_take(IDEM_PREFIX .. o.idem, id, o.fp, idem_ttl) end
  end
  -- An id that exists already (the same Task submitted twice) is not written again:
  -- overwriting would reset a running or finished task and leave it in two indexes.
  local key = TASK_PREFIX .. id
  if not existing and redis.call('EXISTS', key) == 1 then existing = id end
  if differs then
    ids[#ids + 1] = { existing }
  elseif existing then
    ids[#ids + 1] = existing
  else
    local due, due_text = o.due or now, NOW_TEXT
    if o.delay then due = now + o.delay end
    if due ~= now then due_text = string.format('%d', due) end
    local status, children = 'pending', o.children or 0
    if due > now then status = 'scheduled' end
    if children > 0 then status = 'staging' end
    -- attempt, fence, stalls and enqueued_at are left out while they hold their defaults
    -- (0, 0, 0, created_at), as are the id (it is in the key) and a default retry policy
    -- (engine.models.STORED_DEFAULTS): fewer fields make the hottest write cheaper.
    redis.call('HSET', key, 'priority', priority, 'status', status,
      'created_at', NOW_TEXT, 'due_at', due_text, 'type', ARGV[b + 3], 'payload', ARGV[b + 4],
      'max_retries', ARGV[b + 5], unpack(ARGV, b + 7, last))
    if o.parent then redis.call('RPUSH', CHILDREN_PREFIX .. o.parent, id) end
    if children > 0 then
      redis.call('HSET', key, 'total', children, 'n_completed', 0, 'n_failed', 0,
        'n_cancelled', 0, 'started_at', NOW_TEXT)
    elseif status == 'pending' then
      local qi = queue_index(priority)
      local name = o.group and (qi .. ' ' .. o.group) or qi
      local q = queued[name]
      if not q then q = { qi = qi, group = o.group }; queued[name] = q end
      q[#q + 1] = id
      pending[#pending + 1], pending[#pending + 2] = NOW_TEXT, id
    else
      scheduled, entered = scheduled or {}, entered or {}
      scheduled[#scheduled + 1], scheduled[#scheduled + 2] = due_text, id
      entered[#entered + 1], entered[#entered + 2] = NOW_TEXT, id
    end
    ids[#ids + 1] = id
    -- Counters count work: a batch parent is bookkeeping over its children (and is
    -- announced when open_batch.lua opens it).
    if children == 0 then
      emit(EVENTS_LOG, CHANNEL, maxlen, 'task.submitted', id, status)
      submitted = submitted + 1
    end
  end
  b = last + 1
end
-- Wake a worker only for a list that was empty: a worker blocks on the marker only after
-- a claim that emptied the lists, and a full claim leaves the marker for the next one
-- (claim.lua), so a list that already held tasks has a worker on its way to it.
local wake = false
for _, list in pairs(queued) do
  local q = KEYS[list.qi + 1]
  if not list.group then
    if bulk('RPUSH', q, list) == #list then wake = true end
  else                                     -- a group's tasks wait in its list (lib.lua)
    if bulk('RPUSH', q .. ':g:' .. list.group, list) == #list then
      if redis.call('RPUSH', q, '@' .. list.group) == 1 then wake = true end
      redis.call('HINCRBY', q .. ':grouped', 'groups', 1)
    end
    redis.call('HINCRBY', q .. ':grouped', 'tasks', #list)
  end
end
if #pending > 0 then bulk('ZADD', STATUS_PENDING, pending) end
if wake then redis.call('ZADD', MARKER, '0', '0') end
if scheduled then
  -- Wake a worker so that it learns the new earliest due time and sleeps until then.
  redis.call('ZADD', MARKER, '0', '0')
  bulk('ZADD', SCHEDULED, scheduled)
  bulk('ZADD', STATUS_SCHEDULED, entered)
end
if submitted > 0 then
  redis.call('HINCRBY', STATS, 'submitted', count_text(submitted))
  bump_field(minute_key(MINUTE_PREFIX, now), 'submitted', submitted)
end
flush_events()
return ids
