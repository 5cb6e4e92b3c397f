--[[ claim: pending → running for up to COUNT tasks, highest priority first, FIFO within one.
  Each claimed task gets a lease (deadline in `leases`), attempt + 1 and a new fencing
  token; the worker must present the token to complete, fail, renew or release it.
  KEYS[1]  task key prefix
  KEYS[2..5] queue:urgent, queue:high, queue:normal, queue:low
  KEYS[6]  status:pending    KEYS[7]  status:running   KEYS[8]  leases
  KEYS[9]  marker            KEYS[10] events:log       KEYS[11] events (channel)
  KEYS[12] minute stats prefix
  ARGV[1]  now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3]  worker id   ARGV[4] COUNT   ARGV[5] lease length in ms
  Returns: a flat array, 13 values per claimed task: id, token, type, priority, payload,
           attempt, max_retries, retry_delay, backoff, max_retry_delay, session, timeout,
           created_at; empty when nothing is pending.
]]
local now = now_ms(ARGV[1])
local maxlen, worker, want = ARGV[2], ARGV[3], tonumber(ARGV[4])
local deadline = string.format('%d', now + tonumber(ARGV[5]))
local out, ids, running, leases, waits = {}, {}, {}, {}, {}
local need = want
for q = 2, 5 do
  if need <= 0 then break end
  local popped = redis.call('LPOP', KEYS[q], need)
  if popped then
    for _, id in ipairs(popped) do
      local key = KEYS[1] .. id
      local f = redis.call('HMGET', key, 'status', 'type', 'priority', 'payload', 'attempt',
        'max_retries', 'retry_delay', 'backoff', 'max_retry_delay', 'session', 'timeout',
        'created_at', 'fence', 'enqueued_at')
      if f[1] == 'pending' then
        local attempt = string.format('%d', tonumber(f[5] or 0) + 1)
        local token = string.format('%d', tonumber(f[13] or 0) + 1)
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
        local w = string.format('wait:%d', bucket(now - tonumber(f[14] or f[12])))
        waits[w] = (waits[w] or 0) + 1
        emit(KEYS[10], KEYS[11], maxlen, 'task.status_changed', id, 'running',
          ',"worker_id":"' .. worker .. '","attempt":' .. attempt)
        need = need - 1
      end
    end
  end
end
if #ids > 0 then
  bulk('ZREM', KEYS[6], ids)
  bulk('ZADD', KEYS[7], running)
  bulk('ZADD', KEYS[8], leases)
  bump_minute(KEYS[12], now, waits)
end
-- A full batch means more may be waiting: leave the marker so another worker wakes too.
if need <= 0 then redis.call('ZADD', KEYS[9], '0', '0') end
flush_events()
return out
