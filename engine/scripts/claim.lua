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
  A task of a type this worker runs under a provider limit key K (ARGV pairs) is handed
  out only when K admits one more call now (engine/limits.py: pause, concurrency, then a
  GCRA pace on requests and on estimated tokens); else it is parked on K, still pending,
  and taken first once K frees (`limits:due`). A task parked longer than the horizon
  fails ("rate limited out"). A task of a conversation (its `serial` field names its
  session) runs only while no other task of the session is unfinished: it waits in the
  session's list, in submit order, and goes back to the front of its line when the one
  before it ends (`serial:<session>` holds the task whose turn it is; `serials` lists the
  sessions with tasks waiting). While any budget is set, a task of a session or batch whose
  budget is spent fails here too ("budget exhausted"; lib.lua: budget_spent).
  KEYS[1]  task key prefix
  KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low (each with its groups' lists
           and counts: lib.lua, fair shares)
  KEYS[6]  status:pending    KEYS[7]  status:running   KEYS[8]  leases
  KEYS[9]  marker            KEYS[10] events:log       KEYS[11] events (channel)
  KEYS[12] minute stats prefix   KEYS[13] routed   KEYS[14] workers
  KEYS[15] worker hash prefix    KEYS[16] status:failed   KEYS[17] stats
  KEYS[18] handled    KEYS[19] limit key prefix   KEYS[20] limits:due   KEYS[21] limits
  KEYS[22] budgets    KEYS[23] usage: (the usage hash prefix)
  KEYS[24] serial: (the conversation turn prefix)   KEYS[25] serials
  KEYS[-9..-1] the nine batch keys (see lib.lua)
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  worker id   ARGV[4] COUNT   ARGV[5] lease length in ms
  ARGV[6]  how recent a worker's heartbeat must be for it to count as live, in ms
  ARGV[7]  TTL of a dead-lettered (corrupt) task in ms
  ARGV[8]  handler grace in ms (how long a type handled lately waits for its workers)
  ARGV[9]  horizon in ms: how long a task may stay parked on a limit before it fails
  ARGV[10] L, then ARGV[11..10+2L]: (task type, limit key) pairs of this worker's types
  ARGV[11+2L..] the task types this worker has handlers for
  Errors: OOM when Redis is out of memory (nothing claimed).
  Returns: a flat array, 13 values per claimed task: id, token, type, priority, payload,
           attempt, max_retries, retry_delay, backoff, max_retry_delay, session, timeout,
           created_at; empty when nothing is pending. When tasks stay parked on a limit
           key of this worker's and it got fewer than COUNT, one more value follows: the
           ms until the first such key frees (the worker sleeps until then).
]]
local TASK_PREFIX, STATUS_PENDING, STATUS_RUNNING, LEASES = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local MARKER, EVENTS_LOG, CHANNEL, MINUTE_PREFIX = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local ROUTED, WORKERS, WORKER_PREFIX, STATUS_FAILED = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local STATS, HANDLED, LIMIT_PREFIX, LIMITS_DUE = KEYS[17], KEYS[18], KEYS[19], KEYS[20]
local LIMITS, BUDGETS, USAGE_PREFIX = KEYS[21], KEYS[22], KEYS[23]
local SERIAL_PREFIX, SERIALS = KEYS[24], KEYS[25]
local now_arg, maxlen, worker, want = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lease_ms, live_ms, failed_ttl, grace_ms = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local horizon_ms, limit_pairs = ARGV[9], ARGV[10]
local now = now_ms(now_arg)
want = tonumber(want)
horizon_ms, limit_pairs = tonumber(horizon_ms), tonumber(limit_pairs)
local deadline = string.format('%d', now + tonumber(lease_ms))
local out, ids, running, leases, waits = {}, {}, {}, {}, {}
local need = want
local FIELDS = { 'status', 'type', 'priority', 'payload', 'attempt', 'max_retries',
  'retry_delay', 'backoff', 'max_retry_delay', 'session', 'timeout', 'created_at', 'fence',
  'enqueued_at', 'deferred_since', 'parent', 'serial' }

-- The first write is one that Redis refuses when it is out of memory (LPOP, which frees
-- memory, is allowed), so that a full Redis refuses the whole claim: a worker whose
-- results cannot be written takes no more work. It records when this worker last claimed.
local stamped = redis.pcall('HSET', WORKER_PREFIX .. worker, 'last_claim', NOW_TEXT)
if type(stamped) == 'table' and stamped.err and string.find(stamped.err, 'OOM', 1, true) then
  return redis.error_reply(stamped.err)
end

local worker_json = ',"worker_id":' .. cjson.encode(worker) .. ',"attempt":'   -- every event's

local mine, limited, my_limits = {}, {}, {}
for i = 11, 10 + 2 * limit_pairs, 2 do
  limited[ARGV[i]] = ARGV[i + 1]
  my_limits[ARGV[i + 1]] = true
end
for i = 11 + 2 * limit_pairs, #ARGV do mine[ARGV[i]] = true end

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
local budgets_on = nil     -- whether any budget is set: asked once, on the first task
local function over_budget(f)
  if budgets_on == nil then budgets_on = redis.call('EXISTS', BUDGETS) == 1 end
  return budgets_on and (budget_spent(BUDGETS, USAGE_PREFIX, 'session', f[10]) or
    (f[16] and budget_spent(BUDGETS, USAGE_PREFIX, 'batch', f[16])))
end

-- Whether task `id` of a conversation must wait for its session's turn (it is then put in
-- the session's waiting list); else it now holds the turn.
local UNFINISHED = { pending = true, running = true, retry = true, scheduled = true }
local function holds_turn(holder)
  local status = redis.pcall('HGET', TASK_PREFIX .. holder, 'status')
  return type(status) == 'string' and UNFINISHED[status] == true
end

-- A session's turn holder and waiting count; a damaged key (another type) reads as none,
-- and the task then runs rather than wait on a record that cannot be kept.
local function turn_of(turn)
  local holder = redis.pcall('GET', turn)
  local waiting = redis.pcall('LLEN', turn .. ':waiting')
  return type(holder) == 'string' and holder or nil, type(waiting) == 'number' and waiting or 0
end

-- The score that puts a session at the back of `serials` (a count, not a time: the order
-- holds however many are re-scored in one call, or on a test's frozen clock).
local function back_of_serials()
  local last = redis.call('ZRANGE', SERIALS, -1, -1, 'WITHSCORES')
  return string.format('%d', (tonumber(last[2]) or 0) + 1)
end

local function waits_for_turn(id, session)
  local turn = SERIAL_PREFIX .. session
  local holder, waiting = turn_of(turn)
  if holder == id then return false end
  if (holder and holds_turn(holder)) or waiting > 0 then
    local queued = redis.pcall('RPUSH', turn .. ':waiting', id)
    if type(queued) == 'number' then
      if not redis.call('ZSCORE', SERIALS, session) then
        redis.call('ZADD', SERIALS, back_of_serials(), session)
      end
      return true
    end
  end
  redis.pcall('SET', turn, id, 'EX', 86400)
  return false
end

-- Sessions whose turn has ended hand it to their next waiting task, which goes back to
-- the front of its line. A few sessions a claim, those looked at longest ago first: a
-- session still busy goes to the back, so every waiting session is looked at in turn.
local function pass_turns()
  for _, session in ipairs(redis.call('ZRANGE', SERIALS, 0, 19)) do
    local turn = SERIAL_PREFIX .. session
    local holder = turn_of(turn)
    if holder and holds_turn(holder) then
      redis.call('ZADD', SERIALS, back_of_serials(), session)
    else
      local nxt = redis.pcall('LPOP', turn .. ':waiting')
      while type(nxt) == 'string' do
        local f = read_task(TASK_PREFIX .. nxt, { 'status', 'priority', 'group' })
        if f and f[1] == 'pending' then
          redis.pcall('SET', turn, nxt, 'EX', 86400)
          enqueue(f[2], nxt, true, f[3])
          break
        end
        nxt = redis.pcall('LPOP', turn .. ':waiting')    -- cancelled or deleted meanwhile
      end
      local _, waiting = turn_of(turn)
      if waiting == 0 then redis.call('ZREM', SERIALS, session) end
    end
  end
end

local function claimable(id, key, f)
  local field = misfit(key, f, 'pending')
  if field == 'ok' then field = unusable(f) end
  if field == nil then
    if f[17] and waits_for_turn(id, f[17]) then return false end
    if not over_budget(f) then return true end
    dead_letter(key, id, 'budget exhausted: the ' .. (budget_spent(BUDGETS, USAGE_PREFIX,
      'session', f[10]) and 'session' or 'batch') .. "'s budget is spent", 'budget exhausted',
      STATUS_PENDING, STATUS_FAILED, STATS, now, maxlen, failed_ttl)
    return false
  end
  if field == 'ghost' then
    redis.call('ZREM', STATUS_PENDING, id)     -- its index entry would count as pending for ever
  elseif field ~= 'stale' then
    bury(key, id, field, STATUS_PENDING, STATUS_FAILED, STATS, now, maxlen, failed_ttl)
  end
  return false
end

-- Provider limits --------------------------------------------------------------------
-- A call under way holds its place in `inflight` until the worker settles it (settle.lua,
-- defer.lua), the task is cancelled (cancel.lua) or reaped (reap.lua), or, should all of
-- those miss it, until the entry lapses.
local INFLIGHT_HOLD_MS = 600000
local INFLIGHT_UNTIL = string.format('%d', now + INFLIGHT_HOLD_MS)
-- Limit key K's state, read once per call (GCRA: a call conforms when the theoretical
-- arrival time `tat` is at most `tau` ahead of now; each call moves it on by `T`).
local states = {}
local function limit_state(K)
  local st = states[K]
  if st then return st end
  local key = LIMIT_PREFIX .. K
  local h = limit_fields(key)
  st = { key = key, tat = tonumber(h[7]) or 0, tat_tok = tonumber(h[8]) or 0,
    paused = tonumber(h[9]) or 0, conc = tonumber(h[3]),
    completion = tonumber(h[10]) or DEFAULT_COMPLETION, calls = {},
    parked = redis.call('ZCARD', key .. ':parked') }
  local rpm = pace_rpm(h)
  if rpm and rpm > 0 then
    -- A burst of 0.1 s worth of calls; the pace leaves room for it, so that no window of
    -- a minute ever holds more than the per-minute figure.
    local burst = math.max(1, math.floor(rpm / 600))
    st.T = 60000 / math.max(rpm - burst, rpm / 2)
    st.tau = (burst - 1) * st.T
  end
  local tpm = pace_tpm(h)
  if tpm and tpm > 0 then
    st.Tt = 60000 / tpm
    st.tau_t = tpm / 600 * st.Tt
  end
  states[K] = st
  return st
end

-- nil and the call's estimated tokens when K admits one more call now (taken), else the
-- time in ms when it may.
local function admit(st, payload)
  if st.paused > now then return st.paused end
  if st.conc then
    if not st.inflight then
      redis.call('ZREMRANGEBYSCORE', st.key .. ':inflight', '-inf', now)
      st.inflight = redis.call('ZCARD', st.key .. ':inflight')
    end
    if st.inflight >= st.conc then return now + 1000 end   -- settle.lua wakes it sooner
  end
  local tat = math.max(st.tat, now)
  if st.T and tat - st.tau > now then return tat - st.tau end
  local cost, tat_tok = 0, st.tat_tok
  if st.Tt then
    cost = math.ceil(#payload / 4) + st.completion
    tat_tok = math.max(tat_tok, now) + cost * st.Tt
    local allow = math.max(st.tau_t, cost * st.Tt)    -- one call bigger than a burst still goes
    if tat_tok - now > allow + 0.001 then return tat_tok - allow end   -- (float rounding)
  end
  if st.T then st.tat = tat + st.T end
  st.tat_tok = tat_tok
  st.inflight = st.inflight and st.inflight + 1
  st.dirty = true
  return nil, cost
end

local function take(id, key, f, K, cost)
  local attempt = string.format('%d', tonumber(f[5] or '0') + 1)
  local token = string.format('%d', tonumber(f[13] or '0') + 1)
  redis.call('HSET', key, 'status', 'running', 'attempt', attempt, 'fence', token,
    'worker', worker, 'started_at', NOW_TEXT)
  if K then
    -- reap.lua and cancel.lua free the call's place by this key; settle.lua reads the cost
    redis.call('HSET', key, 'limit_key', K, 'limit_cost', cost)
    if f[15] then redis.call('HDEL', key, 'limited_by', 'limited_until') end  -- waits no more
    local calls = states[K].calls
    calls[#calls + 1] = INFLIGHT_UNTIL
    calls[#calls + 1] = id
  end
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

-- Whether a parked task has waited past the horizon (it then fails: "rate limited out").
local function past_horizon(f)
  local since = tonumber(f[15])
  return since ~= nil and now - since > horizon_ms
end

-- Take K's parked tasks, in order, while K admits them; returns when K is empty, cannot
-- admit (K is then due again when it frees) or this claim is full.
local function drain_parked(K)
  local st = limit_state(K)
  local parked = st.key .. ':parked'
  while need > 0 do
    local id = redis.call('ZRANGE', parked, 0, 0)[1]
    if not id then
      redis.call('ZREM', LIMITS_DUE, K)
      st.parked = 0
      return
    end
    local key = TASK_PREFIX .. id
    local f = read_task(key, FIELDS)
    if not claimable(id, key, f) then
      redis.call('ZREM', parked, id)      -- cancelled, deleted or corrupt while it waited
      st.parked = st.parked - 1
    elseif not mine[f[2]] then
      return                              -- another type on the same key: its workers' turn
    else
      local free_at, cost = admit(st, f[4])
      if free_at and past_horizon(f) then
        redis.call('ZREM', parked, id)
        st.parked = st.parked - 1
        dead_letter(key, id, 'rate limited out: waited for ' .. K .. ' past the horizon of '
          .. math.floor(horizon_ms / 1000) .. ' s', 'rate limited out', STATUS_PENDING,
          STATUS_FAILED, STATS, now, maxlen, failed_ttl)
      elseif free_at then
        st.free_at = free_at
        redis.call('ZADD', LIMITS_DUE, string.format('%d', free_at), K)
        return
      else
        redis.call('ZREM', parked, id)
        st.parked = st.parked - 1
        take(id, key, f, K, cost)
      end
    end
  end
end

-- A task of limit key K from the lists: taken when K admits it and nothing of K is parked
-- ahead of it, else parked (true: it counts against this call's bound on set-aside work).
local function take_or_park(id, key, f, K)
  local st = limit_state(K)
  local free_at, cost
  if st.parked > 0 then
    free_at = st.free_at or tonumber(redis.call('ZSCORE', LIMITS_DUE, K)) or now
  else
    free_at, cost = admit(st, f[4])
  end
  if not free_at then
    take(id, key, f, K, cost)
    return false
  end
  st.free_at = free_at
  st.parked = st.parked + 1
  park(key, id, f[3], LIMIT_PREFIX, LIMITS_DUE, K, free_at)
  return true
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
      local K = limited[f[2]]
      if K then take_or_park(id, key, f, K) else take(id, key, f) end
    end
  end
end

pass_turns()

-- Parked tasks of limit keys that have freed go before anything new of theirs.
if limit_pairs > 0 and need > 0 then
  for _, K in ipairs(redis.call('ZRANGEBYSCORE', LIMITS_DUE, '-inf', now)) do
    if need <= 0 then break end
    if my_limits[K] then drain_parked(K) end
  end
end

-- A list is popped again for what was set aside or parked, up to a bound that keeps one
-- call short however many tasks of other workers' types (or limited ones) lie ahead.
local set_aside, parked = 0, 0

-- One task popped from a list: taken, parked on its limit key, or set aside for a worker
-- of its type.
local function consider(id)
  local key = TASK_PREFIX .. id
  local f = read_task(key, FIELDS)
  if claimable(id, key, f) then
    local K = limited[f[2]]
    if K and ours(f[2]) then
      if take_or_park(id, key, f, K) then parked = parked + 1 end
    elseif ours(f[2]) then
      take(id, key, f)
    else
      redis.call('RPUSH', ROUTED, id)
      set_aside = set_aside + 1
    end
  end
end

-- A group's turn (lib.lua, fair shares): one of its tasks while anything else waits in
-- line (`others`), else as many as this claim wants; its marker goes to the back of the
-- line while the group has tasks left.
local function group_turn(line, marker, others)
  local group_list = line .. ':g:' .. string.sub(marker, 2)
  local turn = redis.call('LPOP', group_list, others > 0 and 1 or need)
  if redis.call('LLEN', group_list) > 0 then
    redis.call('RPUSH', line, marker)
  else
    redis.call('HINCRBY', line .. ':grouped', 'groups', -1)
  end
  if turn then
    redis.call('HINCRBY', line .. ':grouped', 'tasks', -#turn)
    for _, id in ipairs(turn) do consider(id) end
  end
end

for q = 2, 5 do
  while need > 0 and set_aside + parked < 1000 do
    local popped = redis.call('LPOP', KEYS[q], need)
    if not popped then break end
    for i, id in ipairs(popped) do
      if string.byte(id, 1) == 64 then      -- '@': a group's marker
        group_turn(KEYS[q], id, #popped - i + redis.call('LLEN', KEYS[q]))
      else
        consider(id)
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
-- Limit keys touched: their clocks written back, their activity noted; and when this
-- worker has room and something of its keys is parked, how long until the first frees.
local first_free = nil
for K, st in pairs(states) do
  if st.dirty then
    redis.pcall('HSET', st.key, 'tat', string.format('%.3f', st.tat),   -- (a damaged key: no)
      'tat_tok', string.format('%.3f', st.tat_tok))
  end
  if #st.calls > 0 then bulk('ZADD', st.key .. ':inflight', st.calls) end
  redis.call('ZADD', LIMITS, NOW_TEXT, K)
end
if need > 0 and limit_pairs > 0 then
  for K in pairs(my_limits) do
    local at = tonumber(redis.call('ZSCORE', LIMITS_DUE, K))
    if at and (not first_free or at < first_free) then first_free = at end
  end
end
flush_events()
if first_free then out[#out + 1] = string.format('%d', math.max(1, first_free - now)) end
return out
