--[[ pause_schedule: stop a recurring schedule from firing until it is resumed.
  A paused schedule stays listed, scored +inf in the schedules set so it is never due.
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name
  Returns: 1 paused, 0 it was paused already, -1 no such schedule.
]]
local SCHEDULE_KEY, SCHEDULES, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, name = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms(now_arg)
local paused = redis.call('HGET', SCHEDULE_KEY, 'paused')
if not paused then return -1 end
if paused == '1' then return 0 end
redis.call('HSET', SCHEDULE_KEY, 'paused', '1', 'updated_at', now)
redis.call('ZADD', SCHEDULES, '+inf', name)
emit_data(EVENTS_LOG, CHANNEL, maxlen, 'schedule.paused', { schedule = name })
flush_events()
return 1
