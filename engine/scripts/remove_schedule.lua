--[[ remove_schedule: delete a recurring schedule (tasks it already submitted are kept).
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name
  Returns: 1 removed, 0 no such schedule.
]]
local now = now_ms(ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
emit_data(KEYS[3], KEYS[4], ARGV[2], 'schedule.removed', { schedule = ARGV[3] })
flush_events()
return 1
