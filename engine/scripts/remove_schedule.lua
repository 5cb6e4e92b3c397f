--[[ remove_schedule: delete a recurring schedule (tasks it already submitted are kept).
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name
  Returns: 1 removed, 0 no such schedule.
]]
local SCHEDULE_KEY, SCHEDULES, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, name = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms(now_arg)
redis.call('ZREM', SCHEDULES, name)
if redis.call('DEL', SCHEDULE_KEY) == 0 then return 0 end
emit_data(EVENTS_LOG, CHANNEL, maxlen, 'schedule.removed', { schedule = name })
flush_events()
return 1
