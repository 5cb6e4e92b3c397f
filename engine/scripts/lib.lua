--[[ Shared helpers, inlined at the top of every script by engine/scripting.py.
  now_ms(arg)        the clock override from ARGV when given (tests), else Redis TIME;
                     sets NOW_TEXT, the same time as text.
  emit(...), emit_raw(...), flush_events()
                     publish an event and append it to the capped stream (one entry per
                     call), so an event exists exactly when its transition happened.
  bulk(cmd, key, items)
                     one command for many members, in slices that fit Lua's stack;
                     returns the last slice's reply.
  bucket(ms)         latency histogram bucket: buckets grow by 25%, so p50/p95 read
                     from them are within 25% of the truth.
  bump_minute(...), bump_field(...), minute_key(...)
                     per-minute counters with a 25 hour TTL (the console's charts).
  count_text(n)      a count as command text ('1' without formatting a number).
  store_end(...)     expire a finished task and hand its result to waiters.
  enqueue/dequeue    push to / remove from a priority list (dequeue: or from `routed`);
                     such scripts take the four queue keys as KEYS[2..5]. A task of a
                     group waits in its group's list, the group's marker in line once
                     (fair shares, below).
  idem_held(key, fp), idem_take(...)
                     read and set an idempotency key ("<id> <content fingerprint>").
  read_task(...), misfit(...), is_count(v), bury(...), dead_letter(...)
                     read a task hash that may be corrupt, judge it, and move a record no
                     script can use to the dead letters ("corrupt record: <field>").
  park(...), limit_fields(key), pace_rpm(h), pace_tpm(h)
                     hold a pending task back for a provider limit key, and read the pace
                     a key's state allows (engine/limits.py).
  budget_spent(...)  whether a session's or batch's token or money budget is used up.
]]
-- The call's time as text, for command arguments and events. Lua turns a number into text
-- with printf("%.14g"), measured at ~3,000 instructions an argument (a third of a short
-- command), so scripts pass NOW_TEXT, built once from TIME's own strings, not `now`.
local NOW_TEXT = nil

local function now_ms(arg)
  if arg and arg ~= '' then
    NOW_TEXT = arg
  else
    local t = redis.call('TIME')   -- seconds and microseconds, as text
    -- %d truncates: 123999 µs are 123 ms. One format is cheaper than padding and slicing.
    NOW_TEXT = string.format('%s%03d', t[1], t[2] / 1000)
  end
  return tonumber(NOW_TEXT)
end

-- Each event is published at once, one message per event; the stream gets one entry per
-- script call (a JSON array when the call made several events), which halves the cost of
-- events in batch calls. flush_events() must run before the script returns.
local EVENTS, EVENT_STREAM, EVENT_MAXLEN = {}, nil, nil

local function emit_raw(stream, channel, maxlen, msg)
  EVENT_STREAM, EVENT_MAXLEN = stream, maxlen
  EVENTS[#EVENTS + 1] = msg
  redis.call('PUBLISH', channel, msg)
end

-- An event {"type": etype, "data": data} stamped with NOW_TEXT (every script calls
-- now_ms() before it emits), encoded by cjson.
local function emit_data(stream, channel, maxlen, etype, data)
  data.ts = tonumber(NOW_TEXT)
  emit_raw(stream, channel, maxlen, cjson.encode({ type = etype, data = data }))
end

-- A task's event: {"type", "data": {"task_id", "status", "ts", ...extra}}. Every value
-- that is text goes through cjson.encode (an id or a record's text may hold quotes);
-- `etype` and `status` are the scripts' own words (a status read from a record goes
-- through is_status first). `extra` is a table of more fields (encoded by cjson), or on
-- hot paths JSON text of more members starting with a comma, its values cjson-encoded
-- or numbers the script formatted. Measured in Redis: encoding only the values costs
-- ~0.4 µs an event over plain text, encoding a table of the whole event ~3.5 µs.
local function emit(stream, channel, maxlen, etype, id, status, extra)
  if type(extra) == 'table' then
    local more = cjson.encode(extra)
    extra = #more > 2 and (',' .. string.sub(more, 2, -2)) or ''
  end
  emit_raw(stream, channel, maxlen, '{"type":"' .. etype .. '","data":{"task_id":' ..
    cjson.encode(id) .. ',"status":"' .. status .. '","ts":' .. NOW_TEXT ..
    (extra or '') .. '}}')
end

local function flush_events()
  if #EVENTS == 1 then
    redis.call('XADD', EVENT_STREAM, 'MAXLEN', '~', EVENT_MAXLEN, '*', 'e', EVENTS[1])
  elseif #EVENTS > 1 then
    redis.call('XADD', EVENT_STREAM, 'MAXLEN', '~', EVENT_MAXLEN, '*', 'e',
      '[' .. table.concat(EVENTS, ',') .. ']')
  end
  EVENTS = {}
end

local function bulk(cmd, key, items)
  local n = #items
  local step = 4000
  if n <= step then return redis.call(cmd, key, unpack(items)) end   -- the usual case
  local reply
  for i = 1, n, step do
    reply = redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, n)))
  end
  return reply
end

local LOG_BASE = math.log(1.25)
local function bucket(ms)
  if ms < 1 then return 0 end
  return math.floor(math.log(ms + 1) / LOG_BASE)
end

-- %d truncates, which for times after 1970 is math.floor, in one call instead of three.
local function minute_key(prefix, now)
  return string.format('%s%d', prefix, now / 60000)
end

-- A count as command text: formatting a number costs ~1,700 instructions, and one-task
-- calls, the commonest, count 1.
local function count_text(n)
  if n == 1 then return '1' end
  return string.format('%d', n)
end

-- A count equal to the increment is a field just created; only then can the key be new,
-- so only then is its TTL set (one command less on nearly every call).
local function bump_field(key, field, n)
  if redis.call('HINCRBY', key, field, count_text(n)) == n then
    redis.call('PEXPIRE', key, '90000000')
  end
end

local function bump_minute(prefix, now, counts)
  local key = minute_key(prefix, now)
  for field, n in pairs(counts) do bump_field(key, field, n) end
end

-- A finished task: its hash and result document expire after ttl, and whoever waits on it
-- (the hash carries `waiters`) gets the document pushed to its waiter list.
local function store_end(task_key, result_key, done_key, doc, ttl, waited)
  redis.call('PEXPIRE', task_key, ttl)
  redis.call('SET', result_key, doc, 'PX', ttl)
  if waited then
    redis.call('RPUSH', done_key, doc)
    redis.call('PEXPIRE', done_key, '60000')
  end
end

-- 1..4 for urgent, high, normal, low. A function, not a table: building a four-key table
-- on every call cost ~6,000 instructions (callgrind), more than the lookups it saves.
local function queue_index(priority)
  if priority == '5' then return 3 elseif priority == '15' then return 1
  elseif priority == '10' then return 2 end
  return 4
end

--[[ Fair shares. A task of a group (the group it names, else its session, else its batch:
  engine/submission.py writes the `group` field) waits in its group's own list,
  `<priority list>:g:<group>`, and the priority list holds the group's marker, '@<group>'
  (an id never starts with '@'), once: each group takes one turn in line, like one
  ungrouped task, so a 10,000-row batch ahead of a single query delays it by one claim.
  `<priority list>:grouped` counts the grouped tasks and the markers (fields `tasks` and
  `groups`), so that depth = LLEN - groups + tasks. ]]
local function push_grouped(q, id, front, group)
  local push = front and 'LPUSH' or 'RPUSH'
  if redis.call(push, q .. ':g:' .. group, id) == 1 then   -- the group was not in line
    redis.call(push, q, '@' .. group)
    redis.call('HINCRBY', q .. ':grouped', 'groups', 1)
  end
  redis.call('HINCRBY', q .. ':grouped', 'tasks', 1)
end

-- Scripts that put tasks back in line take the four queue keys as KEYS[2..5].
local function enqueue(priority, id, front, group)
  local q = KEYS[1 + queue_index(priority)]
  if group and group ~= '' then
    push_grouped(q, id, front, group)
  else
    redis.call(front and 'LPUSH' or 'RPUSH', q, id)
  end
end

-- A pending task is in its priority list (or its group's), or set aside in `routed`
-- (claim.lua). A group left empty keeps its marker until a claim drops it.
local function dequeue(priority, id, routed, group)
  local q = KEYS[1 + queue_index(priority)]
  if group and group ~= '' and redis.call('LREM', q .. ':g:' .. group, 1, id) == 1 then
    redis.call('HINCRBY', q .. ':grouped', 'tasks', -1)
  elseif redis.call('LREM', q, 1, id) == 0 then
    redis.call('LREM', routed, 1, id)
  end
end

-- An idempotency key holds "<task id> <fingerprint>", the fingerprint a digest of the
-- task's content (engine/queue.py), so that a reuse with other content is told apart from
-- a retry of the same submit. Returns the id the key names (nil when it is free) and
-- whether the content differs (a value without a fingerprint matches anything).
local function idem_held(key, fp)
  local held = redis.call('GET', key)
  if not held then return nil, false end
  local id, held_fp = string.match(held, '^(%S+) ?(%S*)$')
  return id or held, (fp or '') ~= '' and held_fp ~= nil and held_fp ~= '' and held_fp ~= fp
end

local function idem_take(key, id, fp, ttl)
  redis.call('SET', key, id .. ' ' .. (fp or ''), 'PX', ttl)
end

--[[ Batch bookkeeping. A BATCH_QUERY parent tracks its children: each child that ends
  counts in the parent (n_completed / n_failed / n_cancelled) and the last one ends the
  parent. Scripts that end or reopen tasks take nine "batch keys" as their LAST nine KEYS:
  task prefix, result prefix, waiter prefix, status:running, status:completed,
  status:cancelled, events:log, events channel, children list prefix. A parent is
  bookkeeping, not work: the counters in `stats` count its children only. ]]
local function batch_keys()
  local b = #KEYS - 9
  return { task = KEYS[b + 1], result = KEYS[b + 2], done = KEYS[b + 3], running = KEYS[b + 4],
    completed = KEYS[b + 5], cancelled = KEYS[b + 6], log = KEYS[b + 7], channel = KEYS[b + 8],
    children = KEYS[b + 9] }
end

local function finish_parent(K, parent, f, now, maxlen, ttl)
  local status = tonumber(f[4]) > 0 and 'cancelled' or 'completed'
  local pkey = K.task .. parent
  local doc = cjson.encode({ task_id = parent, status = status, batch = true,
    total = tonumber(f[1]), completed = tonumber(f[2]), failed = tonumber(f[3]),
    cancelled = tonumber(f[4]), duration = (now - tonumber(f[7])) / 1000 })
  redis.call('HSET', pkey, 'status', status, 'finished_at', now)
  redis.call('PEXPIRE', K.children .. parent, ttl)
  store_end(pkey, K.result .. parent, K.done .. parent, doc, ttl, f[6])
  redis.call('ZREM', K.running, parent)
  redis.call('ZADD', status == 'completed' and K.completed or K.cancelled, now, parent)
  emit(K.log, K.channel, maxlen, 'task.' .. status, parent, status, { batch = true })
end

-- A parent whose counters do not parse (a corrupt record) counts nothing: HINCRBY on it
-- would abort the calling script half-way. The console shows such a parent as corrupt.
local function child_ended(parent, outcome, now, maxlen, ttl)
  if not parent or parent == '' then return end
  local K = batch_keys()
  local pkey = K.task .. parent
  local f = redis.pcall('HMGET', pkey, 'total', 'n_completed', 'n_failed', 'n_cancelled',
    'status', 'waiters', 'created_at')
  if f.err or not f[5] then return end
  local n = { total = tonumber(f[1]), completed = tonumber(f[2]), failed = tonumber(f[3]),
    cancelled = tonumber(f[4]) }
  if not (n.total and n.completed and n.failed and n.cancelled and tonumber(f[7])) then return end
  n[outcome] = n[outcome] + 1
  f[2], f[3], f[4] = n.completed, n.failed, n.cancelled
  redis.call('HSET', pkey, 'n_' .. outcome, n[outcome])
  emit(K.log, K.channel, maxlen, 'batch.progress', parent, f[5], ',"total":' .. f[1] ..
    ',"completed":' .. f[2] .. ',"failed":' .. f[3] .. ',"cancelled":' .. f[4])
  if f[5] == 'running' and n.completed + n.failed + n.cancelled >= n.total then
    finish_parent(K, parent, f, now, maxlen, ttl)
  end
end

local function child_reopened(parent, outcome, now, maxlen)
  if not parent or parent == '' then return end
  local K = batch_keys()
  local pkey = K.task .. parent
  local f = redis.pcall('HMGET', pkey, 'status', 'n_' .. outcome)
  local status, count = f[1], tonumber(f[2])
  if f.err or not status or not count then return end   -- no parent, or a corrupt one
  redis.call('HSET', pkey, 'n_' .. outcome, count - 1)
  if status == 'completed' or status == 'cancelled' then
    redis.call('PERSIST', pkey)
    redis.call('PERSIST', K.children .. parent)
    redis.call('DEL', K.result .. parent, K.done .. parent)   -- waiters must not see the old end
    redis.call('HSET', pkey, 'status', 'running', 'finished_at', '')
    redis.call('ZREM', status == 'completed' and K.completed or K.cancelled, parent)
    redis.call('ZADD', K.running, now, parent)
    emit(K.log, K.channel, maxlen, 'task.status_changed', parent, 'running', { batch = true })
  end
end

--[[ Records that may be corrupt. A script that reads a task it learnt of through an index
  (claim, promote, reap) checks it before writing anything about it: one bad record must
  neither abort the script half-way (Redis does not roll a script back, so the rest of a
  claimed batch would be stranded) nor reach a worker that cannot parse it. A record no
  script can use goes to the dead letters in the same call, with the field named. ]]

-- HMGET that survives a key of another type (HMGET would raise WRONGTYPE): the fields, or
-- nil for such a key.
local function read_task(key, fields)
  local f = redis.pcall('HMGET', key, unpack(fields))
  if f.err then return nil end
  return f
end

-- A whole number >= 0 as the engine writes it (digits only, so that Python's int() and
-- Lua's tonumber() agree on it), or absent when `optional`.
local function is_count(v, optional)
  if not v then return optional == true end
  return #v < 16 and string.find(v, '^%d+$') ~= nil
end

local function is_status(s)
  return s == 'pending' or s == 'running' or s == 'completed' or s == 'failed' or
    s == 'scheduled' or s == 'retry' or s == 'cancelled' or s == 'staging'
end

-- How a record read through an index (f: read_task's reply, status first) stands:
-- 'ok' (its status is `want` or `want2`), 'stale' (it has moved on: the entry is old),
-- 'ghost' (no record at all), or the name of the field that makes it unusable.
local function misfit(key, f, want, want2)
  if not f then return 'key type' end
  local status = f[1]
  if status == want or (want2 and status == want2) then return 'ok' end
  if status then return is_status(status) and 'stale' or 'status' end
  if redis.call('EXISTS', key) == 0 then return 'ghost' end
  return 'status'
end

-- Fail a pending task for good without running it: status failed with `err` and
-- `reason`, indexed in status:failed, counted, its result document stored, its waiters
-- and batch told. `from` is the status index it was found through.
local function dead_letter(key, id, err, reason, from, failed, stats, now, maxlen, ttl)
  local f = redis.call('HMGET', key, 'waiters', 'parent')
  redis.call('HSET', key, 'status', 'failed', 'error', err, 'finished_at', NOW_TEXT,
    'reason', reason)
  local doc = cjson.encode({ task_id = id, status = 'failed', error = err, reason = reason,
    duration = 0 })
  local K = batch_keys()
  store_end(key, K.result .. id, K.done .. id, doc, ttl, f[1])
  redis.call('ZREM', from, id)
  redis.call('ZADD', failed, NOW_TEXT, id)
  redis.call('HINCRBY', stats, 'failed', 1)
  emit(K.log, K.channel, maxlen, 'task.failed', id, 'failed', { error = err, reason = reason })
  if f[2] ~= id then child_ended(f[2], 'failed', now, maxlen, ttl) end
end

-- Move an unusable record to the dead letters ("corrupt record: <field>", reason corrupt).
-- A key of another type is not a task at all: a failed record takes its place, so the id
-- can still be shown.
local function bury(key, id, field, from, failed, stats, now, maxlen, ttl)
  if field == 'key type' then
    redis.call('DEL', key)
    redis.call('HSET', key, 'type', '', 'created_at', NOW_TEXT)
  end
  dead_letter(key, id, 'corrupt record: ' .. field, 'corrupt', from, failed, stats, now,
    maxlen, ttl)
end

--[[ Provider limits (engine/limits.py). A limit key K has a state hash `limit:K` and, next
  to it, `limit:K:parked` (pending tasks waiting for K, scored so that ZRANGE gives them in
  claim order: priority first, then the time they were queued) and `limit:K:inflight`
  (calls under way, scored by when the entry lapses). `limits:due` scores each K with
  parked tasks by when it frees; `limits` scores every K by its last activity. ]]

-- The state fields of a limit key, in the order the helpers below index them.
local LIMIT_FIELDS = { 'rpm', 'tpm', 'concurrency', 'learned_rpm', 'learned_tpm', 'pace_rps',
  'tat', 'tat_tok', 'paused_until', 'completion_avg', 'cut_at' }
local SLOW_START_RPM = 60           -- a key nothing is known about starts at 1 call/s
local DEFAULT_COMPLETION = 256      -- tokens a call is assumed to produce before any is seen

-- A limit key's state fields (LIMIT_FIELDS order); empty for a key of another type.
local function limit_fields(key)
  local h = redis.pcall('HMGET', key, unpack(LIMIT_FIELDS))
  if h.err then return {} end
  return h
end

-- The requests per minute a key is paced at (h: limit_fields): the provider's own figure
-- less 5% (hosts' clocks and the network's jitter bunch calls up), else the pace learnt
-- from 429s alone, else a slow start when nothing is configured either; never above the
-- configured cap less 2%. nil: nothing bounds the rate.
local function pace_rpm(h)
  local cfg, learned, pace = tonumber(h[1]), tonumber(h[4]), tonumber(h[6])
  local rpm
  if learned then rpm = learned * 0.95
  elseif pace then rpm = pace * 60
  elseif not (cfg or tonumber(h[2]) or tonumber(h[3])) then rpm = SLOW_START_RPM end
  if cfg then rpm = math.min(rpm or cfg, cfg * 0.98) end
  return rpm
end

-- The tokens per minute a key is paced at (nil: unbounded), as pace_rpm.
local function pace_tpm(h)
  local cfg, learned = tonumber(h[2]), tonumber(h[5])
  local tpm = learned and learned * 0.95
  if cfg then tpm = math.min(tpm or cfg, cfg * 0.98) end
  return tpm
end

-- Park pending task `id` (of priority `priority`) on limit key K until `free_at` (ms): it
-- stays pending, records why (limited_by, limited_until, and deferred_since the first
-- time), and K is due at free_at. Parked tasks are scored so that ZRANGE gives them in
-- claim order: priority first (1 urgent .. 4 low), then the order they were parked in (a
-- per-key counter); a task parked again (a 429) keeps its first place.
local function park(task_key, id, priority, limit_prefix, due, K, free_at)
  local score = redis.call('HGET', task_key, 'parked_score')
  if not score then
    local seq = redis.pcall('HINCRBY', limit_prefix .. K, 'seq', 1)   -- a damaged key: 0
    score = string.format('%d', queue_index(priority) * 1e13 + (tonumber(seq) or 0))
  end
  redis.call('ZADD', limit_prefix .. K .. ':parked', score, id)
  local until_text = string.format('%d', free_at)
  redis.call('HSET', task_key, 'limited_by', K, 'limited_until', until_text,
    'parked_score', score)
  redis.call('HSETNX', task_key, 'deferred_since', NOW_TEXT)
  redis.call('ZADD', due, 'LT', until_text, K)    -- LT adds a new member too
end

--[[ Budgets (engine/usage.py). `budgets` holds the limits, fields
  `<kind>:<id>:tokens` and `<kind>:<id>:cost_nanos` (kind 'session' or 'batch'); what was
  spent is the usage hash `<usage_prefix><kind>:<id>` (fields total_tokens, cost_nanos,
  written by usage.lua). True when either limit is reached. A limit or a count that does
  not parse (a hand-edited hash) limits nothing rather than failing the calling script. ]]
local function budget_spent(budgets_key, usage_prefix, kind, id)
  if not id or id == '' then return false end
  local base = kind .. ':' .. id .. ':'
  local limit = redis.pcall('HMGET', budgets_key, base .. 'tokens', base .. 'cost_nanos')
  if limit.err or not (limit[1] or limit[2]) then return false end
  local spent = redis.pcall('HMGET', usage_prefix .. kind .. ':' .. id, 'total_tokens', 'cost_nanos')
  if spent.err then return false end
  for i = 1, 2 do
    local cap, used = tonumber(limit[i]), tonumber(spent[i]) or 0
    if cap and used >= cap then return true end
  end
  return false
end
