--[[ settle: calls under provider limit keys have ended; what each provider said is learnt
  for every worker (engine/limits.py). No task changes state here: complete.lua or
  fail.lua ends the task, in the same flush.
  For each call: its place in `limit:K:inflight` is freed (and K, when tasks are parked on
  it, is due now so a waiting worker takes one); the provider's x-ratelimit figures
  become K's learned limits, and a spent allowance (remaining 0) pauses K until its reset;
  a provider that sends no such headers is paced by additive increase (slow start: each
  answer adds 0.7 call/s, doubling the pace every second, until the first 429; then
  1/pace); the tokens the call really used correct K's token clock, and the average answer
  length used to estimate the next calls.
  KEYS[1] task key prefix   KEYS[2] limit key prefix   KEYS[3] limits:due
  KEYS[4] limits            KEYS[5] marker
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3..] 11 values per call: task id, limit key, headers seen ('1' or '0'), limit
           requests, limit tokens, remaining requests, remaining tokens, ms until the
           requests reset, ms until the tokens reset, completion tokens, total tokens
           ('' where the provider said nothing)
  Returns: how many calls were settled.
]]
local TASK_PREFIX, LIMIT_PREFIX, LIMITS_DUE, LIMITS, MARKER = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_arg = ARGV[1]
local now = now_ms(now_arg)
local STRIDE = 11
local MAX_PAUSE_MS = 60000       -- a reset figure never pauses a key for longer than this

-- Each key touched: its state fields (read on first need), the fields to write back, the
-- calls to free.
local keys = {}
local function state(K)
  local st = keys[K]
  if not st then
    st = { key = LIMIT_PREFIX .. K, set = {}, calls = {} }
    keys[K] = st
  end
  return st
end

local function fields(st)
  if not st.h then
    st.h = limit_fields(st.key)
    st.old_rpm = pace_rpm(st.h)      -- the pace before this call learnt anything
  end
  return st.h
end

-- What one answer's rate headers teach: the provider's limits, and a pause until the reset
-- of an allowance it says is spent.
local function learn_headers(st, limit_r, limit_t, left_r, left_t, reset_r, reset_t)
  local h, set = fields(st), st.set
  if limit_r and limit_r > 0 then set.learned_rpm, h[4] = limit_r, limit_r end
  if limit_t and limit_t > 0 then set.learned_tpm, h[5] = limit_t, limit_t end
  local pause = nil
  if left_r and left_r < 1 and reset_r then pause = now + math.min(reset_r, MAX_PAUSE_MS) end
  local need = tonumber(h[10]) or DEFAULT_COMPLETION
  if left_t and left_t < need and reset_t then
    pause = math.max(pause or 0, now + math.min(reset_t, MAX_PAUSE_MS))
  end
  if pause and pause > (tonumber(h[9]) or 0) then set.paused_until, h[9] = pause, pause end
end

-- An answer from a provider that sends no rate headers: a little faster (slow start until
-- its first 429, which defer.lua records as cut_at).
local function speed_up(st)
  local h = fields(st)
  local pace = tonumber(h[6]) or (tonumber(h[1]) or SLOW_START_RPM) / 60
  pace = h[11] and pace + 1 / pace or pace + 0.7
  st.set.pace_rps, h[6] = pace, pace
end

-- The tokens a call really used correct the token clock its estimate moved, and the
-- average answer length the next estimates use.
local function count_tokens(st, id, completion, total)
  local h, set = fields(st), st.set
  if total and total > 0 then
    local tpm = pace_tpm(h)
    local estimate = tonumber(redis.pcall('HGET', TASK_PREFIX .. id, 'limit_cost')) or 0
    if tpm and tpm > 0 and estimate > 0 then
      local tat = (tonumber(h[8]) or now) + (total - estimate) * 60000 / tpm
      set.tat_tok, h[8] = tat, tat
    end
  end
  if completion and completion >= 0 then
    local avg = 0.8 * (tonumber(h[10]) or completion) + 0.2 * completion
    set.completion_avg, h[10] = avg, avg
  end
end

local settled = 0
for i = 3, #ARGV - STRIDE + 1, STRIDE do
  local id, K, headers = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local completion, total = tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10])
  local st = state(K)
  st.calls[#st.calls + 1] = id
  if headers == '1' then
    learn_headers(st, tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]),
      tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]))
  elseif headers == '0' then
    speed_up(st)
  end
  if completion or total then count_tokens(st, id, completion, total) end
  settled = settled + 1
end

for K, st in pairs(keys) do
  bulk('ZREM', st.key .. ':inflight', st.calls)
  if redis.call('ZCARD', st.key .. ':parked') > 0 then
    redis.call('ZADD', LIMITS_DUE, 'LT', NOW_TEXT, K)   -- a freed call: a waiting task may go
    redis.call('ZADD', MARKER, '0', '0')
  end
  local set = st.set
  if st.old_rpm then
    -- A new pace applies from now: the calls already paced ahead of now are re-spaced at
    -- it (the backlog scaled, not dropped: dropping it on every answer would let calls
    -- through faster than the pace).
    local rpm, tat = pace_rpm(st.h), tonumber(st.h[7])
    if rpm and rpm > 0 and rpm ~= st.old_rpm and tat and tat > now then
      set.tat = now + (tat - now) * st.old_rpm / rpm
    end
  end
  local flat = {}
  for name, value in pairs(set) do
    flat[#flat + 1] = name
    flat[#flat + 1] = string.format('%.17g', value)
  end
  if #flat > 0 then redis.pcall('HSET', st.key, unpack(flat)) end   -- (a damaged key: no)
  redis.call('ZADD', LIMITS, NOW_TEXT, K)
end
return settled
