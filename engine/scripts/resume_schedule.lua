--[[ resume_schedule: a paused schedule fires again, from the first tick after now (the
  ticks that passed while it was paused are not caught up: pausing means "not these").
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name   ARGV[4] next fire time in ms (the first tick after now)
  Returns: 1 resumed, 0 it was not paused (nothing changed), -1 no such schedule.
]]
local now = now_ms(ARGV[1])
local paused = redis.call('HGET', KEYS[1], 'paused')
if not paused then return -1 end
if paused ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'paused', '0', 'next_fire', ARGV[4], 'updated_at', now)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
emit_data(KEYS[3], KEYS[4], ARGV[2], 'schedule.resumed', { schedule = ARGV[3], next_fire = tonumber(ARGV[4]) })
flush_events()
return 1
