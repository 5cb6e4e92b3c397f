--[[ Shared helpers, inlined at the top of every script by engine/scripting.py.
  now_ms(arg)        the clock override from ARGV when given (tests), else Redis TIME.
  emit(...), emit_raw(...)
                     append an event to the capped stream and publishes it, so an event
                     exists exactly when its transition happened.
  bulk(cmd, key, items)
                     one command for many members, in slices that fit Lua's stack.
  bucket(ms)         latency histogram bucket: buckets grow by 25%, so p50/p95 read
                     from them are within 25% of the truth.
  bump_minute(...)   per-minute counters with a 25 hour TTL (the console's charts).
  enqueue/dequeue    push to / remove from a priority list; such scripts take the four
                     queue keys as KEYS[2..5].
]]
local function now_ms(arg)
  if arg and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function emit_raw(stream, channel, maxlen, msg)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', msg)
  redis.call('PUBLISH', channel, msg)
end

local function emit(stream, channel, maxlen, etype, id, status, now, extra)
  emit_raw(stream, channel, maxlen, '{"type":"' .. etype .. '","data":{"task_id":"' .. id ..
    '","status":"' .. status .. '","ts":' .. string.format('%d', now) .. (extra or '') .. '}}')
end

local function bulk(cmd, key, items)
  local n = #items
  local step = 4000
  for i = 1, n, step do
    redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, n)))
  end
end

local LOG_BASE = math.log(1.25)
local function bucket(ms)
  if ms < 1 then return 0 end
  return math.floor(math.log(ms + 1) / LOG_BASE)
end

local function bump_minute(prefix, now, counts)
  local key = prefix .. string.format('%d', math.floor(now / 60000))
  for field, n in pairs(counts) do
    redis.call('HINCRBY', key, field, n)
  end
  redis.call('PEXPIRE', key, 90000000)
end

local QUEUE_INDEX = { ['15'] = 1, ['10'] = 2, ['5'] = 3, ['0'] = 4 }

-- Scripts that put tasks back in line take the four queue keys as KEYS[2..5].
local function enqueue(priority, id, front)
  redis.call(front and 'LPUSH' or 'RPUSH', KEYS[1 + QUEUE_INDEX[priority]], id)
end

local function dequeue(priority, id)
  redis.call('LREM', KEYS[1 + QUEUE_INDEX[priority]], 1, id)
end
