--[[ progress: running tasks report how far they are and the answer so far (task.progress).
  KEYS[1] task key prefix   KEYS[2] partial: prefix of the streamed text keys
  KEYS[3] events:log        KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] TTL of a task's streamed text in ms    ARGV[4] longest text an event carries (bytes)
  ARGV[5..] per task, 6 values: id, token, fraction 0..1 ('' = not reported this time),
            message, text to append ('' = none), bytes of text sent before this text
  Returns: one code per task: 1 written, -3 lease lost (token stale or task no longer
           running: another worker has it, or it was cancelled, requeued or deleted).
  Stored: the text in `partial:<id>` (at most 64 KB: the worker drops what streams past
  that, engine/progress.py MAX_PARTIAL_BYTES), expiring ARGV[3] after its last write, and
  `progress`, `progress_message`, `progress_fence` in the task hash; both outlive the
  task's end, so a reader opening it later replays the answer.
  The text and progress belong to one attempt: an attempt's first write (its token is not
  yet the hash's `progress_fence`) drops what an earlier attempt left. A write sent again
  (its reply lost) appends only the bytes not there yet, found by the offset.
]]
local TASK_PREFIX, PARTIAL_PREFIX, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, ttl, event_text = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
event_text = tonumber(event_text)
local codes = {}
for b = 5, #ARGV - 5, 6 do
  local id, token, fraction, message = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local text, offset = ARGV[b + 4], tonumber(ARGV[b + 5]) or 0
  local key, pkey = TASK_PREFIX .. id, PARTIAL_PREFIX .. id
  local f = read_task(key, { 'fence', 'status', 'progress_fence' })
  if f and f[1] == token and f[2] == 'running' then
    local length = 0
    if f[3] ~= token then
      if f[3] then
        redis.call('DEL', pkey)
        redis.call('HDEL', key, 'progress', 'progress_message')
      end
      redis.call('HSET', key, 'progress_fence', token)
    elseif text ~= '' then
      length = redis.call('STRLEN', pkey)
    end
    local data = { task_id = id, status = 'running' }
    if text ~= '' then
      -- Bytes already there beyond the offset came from this same write, sent before.
      local skip = math.max(0, length - offset)
      if skip < #text then
        length = redis.call('APPEND', pkey, skip > 0 and string.sub(text, skip + 1) or text)
      end
      redis.call('PEXPIRE', pkey, ttl)
      data.partial_bytes, data.offset = length, offset
      if #text <= event_text then data.text = text end
    end
    if fraction ~= '' then
      redis.call('HSET', key, 'progress', fraction, 'progress_message', message)
      data.progress = tonumber(fraction)
      if message ~= '' then data.message = message end
    end
    emit_data(EVENTS_LOG, CHANNEL, maxlen, 'task.progress', data)
    codes[#codes + 1] = 1
  else
    codes[#codes + 1] = -3
  end
end
flush_events()
return codes
