--[[ pause_schedule: stop a recurring schedule from firing until it is resumed.
  A paused schedule stays listed, scored +inf in the schedules set so it is never due.
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name
  Returns: 1 paused, 0 it was paused already, -1 no such schedule.
]]
local now = now_ms(ARGV[1])
local paused = redis.call('HGET', KEYS[1], 'paused')
if not paused then return -1 end
if paused == '1' then return 0 end
redis.call('HSET', KEYS[1], 'paused', '1', 'updated_at', now)
redis.call('ZADD', KEYS[2], '+inf', ARGV[3])
emit_data(KEYS[3], KEYS[4], ARGV[2], 'schedule.paused', { schedule = ARGV[3] })
flush_events()
return 1
