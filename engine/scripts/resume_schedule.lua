--[[ resume_schedule: a paused schedule fires again, from the first tick after now (the
  ticks that passed while it was paused are not caught up: pausing means "not these").
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name   ARGV[4] next fire time in ms (the first tick after now)
  Returns: 1 resumed, 0 it was not paused (nothing changed), -1 no such schedule.
]]
local SCHEDULE_KEY, SCHEDULES, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, name, next_fire = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms(now_arg)
local paused = redis.call('HGET', SCHEDULE_KEY, 'paused')
if not paused then return -1 end
if paused ~= '1' then return 0 end
redis.call('HSET', SCHEDULE_KEY, 'paused', '0', 'next_fire', next_fire, 'updated_at', now)
redis.call('ZADD', SCHEDULES, next_fire, name)
emit_data(EVENTS_LOG, CHANNEL, maxlen, 'schedule.resumed', { schedule = name, next_fire = tonumber(next_fire) })
flush_events()
return 1
