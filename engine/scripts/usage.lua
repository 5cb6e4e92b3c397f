--[[ usage: count the tokens and cost of model calls, in the task and in the totals.
  Not fenced: tokens a worker spent are spent even when its lease was lost meanwhile, so
  a report counts whenever the task hash exists (it gives the session and the batch).
  Every field is a whole number (cost in 1e-9 dollars), so sums never drift. The totals
  are hashes under the usage prefix: usage:total, usage:model:<model>, usage:batch:<id>,
  usage:session:<id> and usage:m:<minute>, fields prompt_tokens, completion_tokens,
  total_tokens, cost_nanos, calls, priced_calls. Minute hashes expire like stats:m: (25 h
  from their first count); batch and session hashes TTL ARGV[3] from their last count.
  KEYS[1] task key prefix   KEYS[2] usage:total   KEYS[3] usage: (the usage hash prefix)
  KEYS[4] usage:models      KEYS[5] usage:batches  KEYS[6] usage:sessions
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length (unused)
  ARGV[3] TTL of batch and session totals in ms (their index entries older than it go)
  ARGV[4] number of reports N
  ARGV[5..] per report, 6 values: task id, model ('' unknown), prompt tokens, completion
           tokens, total tokens, cost in nanodollars ('' when the model has no price)
  Returns: one code per report: 1 counted, 0 no such task (nothing counted).
]]
local TASK_PREFIX, TOTAL, USAGE_PREFIX = KEYS[1], KEYS[2], KEYS[3]
local MODELS, BATCHES, SESSIONS = KEYS[4], KEYS[5], KEYS[6]
local now_arg, ttl, n = ARGV[1], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
n = tonumber(n)
local FIELDS = { 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost_nanos' }
local sums, order, touched, codes = {}, {}, { {}, {}, {} }, {}

-- Add one report (numbers v[1..4], cost nil when unpriced) to the sums of `key`.
local function add(key, v)
  local s = sums[key]
  if not s then
    s = { 0, 0, 0, 0, 0, 0 }
    sums[key] = s
    order[#order + 1] = key
  end
  for i = 1, 3 do s[i] = s[i] + v[i] end
  s[5] = s[5] + 1
  if v[4] then s[4], s[6] = s[4] + v[4], s[6] + 1 end
end

local minute = minute_key(USAGE_PREFIX .. 'm:', now)
for i = 0, n - 1 do
  local b = 5 + i * 6
  local id, model = ARGV[b], ARGV[b + 1]
  local key = TASK_PREFIX .. id
  local f = read_task(key, { 'type', 'session', 'parent' })
  local v = { tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
    tonumber(ARGV[b + 5]) }
  if f and f[1] and v[1] and v[2] and v[3] then
    for j = 1, 3 do redis.pcall('HINCRBY', key, FIELDS[j], ARGV[b + 1 + j]) end
    if v[4] then redis.pcall('HINCRBY', key, 'cost_nanos', ARGV[b + 5]) end
    if model ~= '' then redis.call('HSET', key, 'model', model) end
    add(TOTAL, v)
    add(minute, v)
    local names = { model, f[3] and f[3] ~= id and f[3] or '', f[2] or '' }
    for k, kind in ipairs({ 'model:', 'batch:', 'session:' }) do
      if names[k] ~= '' then
        add(USAGE_PREFIX .. kind .. names[k], v)
        touched[k][names[k]] = true
      end
    end
    codes[#codes + 1] = 1
  else
    codes[#codes + 1] = 0
  end
end
-- pcall: a total or an index of another type (a hand-edited Redis) must not abort the
-- script half-way, with some totals counted and others not.
local NAMES = { 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost_nanos', 'calls',
  'priced_calls' }
for _, key in ipairs(order) do
  local s = sums[key]
  for i = 1, 6 do
    if s[i] ~= 0 then redis.pcall('HINCRBY', key, NAMES[i], string.format('%d', s[i])) end
  end
end
if #order > 0 then
  if redis.call('PTTL', minute) < 0 then redis.call('PEXPIRE', minute, '90000000') end
  for k, index in ipairs({ MODELS, BATCHES, SESSIONS }) do
    for name in pairs(touched[k]) do
      redis.pcall('ZADD', index, NOW_TEXT, name)
      if k > 1 then redis.call('PEXPIRE', USAGE_PREFIX .. (k == 2 and 'batch:' or 'session:') .. name, ttl) end
    end
    if k > 1 and next(touched[k]) then
      redis.pcall('ZREMRANGEBYSCORE', index, '-inf', now - tonumber(ttl))
    end
  end
end
return codes
