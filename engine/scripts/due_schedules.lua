--[[ due_schedules: the recurring schedules whose next fire time has come, and Redis's now.
  Read-only: firing is fire_schedule's job, after the caller has computed the next tick.
  KEYS[1] schedules (sorted set: names scored by next fire time in ms; paused ones +inf)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length (unused)
  ARGV[3] most schedules returned
  Returns: {now in ms, name, next fire in ms, name, next fire in ms, ...}; only {now}
           when nothing is due.
]]
local SCHEDULES = KEYS[1]
local now_arg, limit = ARGV[1], ARGV[3]
local now = now_ms(now_arg)
local due = redis.call('ZRANGEBYSCORE', SCHEDULES, '-inf', now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(limit))
local out = { now }
for i = 1, #due do out[#out + 1] = due[i] end
return out
