--[[ usage_totals: read every token and cost total in one round trip (usage.lua writes them).
  Read-only. A script rather than a pipeline because the names of the batches and
  sessions to read come from their indexes, and the minutes from Redis's clock.
  KEYS[1] usage:total   KEYS[2] usage: (the usage hash prefix)   KEYS[3] usage:models
  KEYS[4] usage:batches   KEYS[5] usage:sessions
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length (unused)
  ARGV[3] minutes to read (the last ones, the current included)
  ARGV[4] most models, batches and sessions read (each: the most recently counted)
  Returns: {now in ms, total (HGETALL reply), models, batches, sessions, minutes}, where
           models, batches and sessions are {name, HGETALL reply, name, ...} newest first
           and minutes {HGETALL reply, ...} oldest first.
]]
local TOTAL, USAGE_PREFIX, MODELS, BATCHES, SESSIONS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_arg, minutes, most = ARGV[1], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
minutes, most = tonumber(minutes), tonumber(most)

-- A key of another type (a hand-edited Redis) reads as no counts, not an error.
local function hash(key)
  local reply = redis.pcall('HGETALL', key)
  if reply.err then return {} end
  return reply
end

local function named(index, kind)
  local out = {}
  for _, name in ipairs(redis.call('ZREVRANGE', index, 0, most - 1)) do
    out[#out + 1] = name
    out[#out + 1] = hash(USAGE_PREFIX .. kind .. name)
  end
  return out
end

local last = math.floor(now / 60000)
local rows = {}
for minute = last - minutes + 1, last do
  rows[#rows + 1] = hash(string.format('%sm:%d', USAGE_PREFIX, minute))
end
return { NOW_TEXT, hash(TOTAL), named(MODELS, 'model:'),
  named(BATCHES, 'batch:'), named(SESSIONS, 'session:'), rows }
