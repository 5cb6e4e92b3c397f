--[[ add_schedule: create a recurring schedule, or update one whose definition changed.
  Adding an identical definition again changes nothing (its next fire time is kept), so an
  application may call add_schedule at every start without moving or repeating a tick.
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name   ARGV[4] cron expression   ARGV[5] timezone   ARGV[6] misfire policy
  ARGV[7] task template (JSON)   ARGV[8] next fire time in ms (the first tick after now)
  Returns: 1 created, 2 updated (next fire recomputed; a paused schedule stays paused),
           0 unchanged.
]]
local SCHEDULE_KEY, SCHEDULES, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, name, cron = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local timezone, misfire, template, next_fire = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local now = now_ms(now_arg)
local f = redis.call('HMGET', SCHEDULE_KEY, 'cron', 'timezone', 'misfire', 'task', 'paused')
if f[1] == cron and f[2] == timezone and f[3] == misfire and f[4] == template then return 0 end
local created = not f[1]
redis.call('HSET', SCHEDULE_KEY, 'name', name, 'cron', cron, 'timezone', timezone,
  'misfire', misfire, 'task', template, 'next_fire', next_fire, 'updated_at', now)
if created then
  redis.call('HSET', SCHEDULE_KEY, 'created_at', now, 'paused', '0', 'fires', 0, 'skipped', 0)
end
redis.call('ZADD', SCHEDULES, f[5] == '1' and '+inf' or next_fire, name)
emit_data(EVENTS_LOG, CHANNEL, maxlen, 'schedule.' .. (created and 'added' or 'updated'),
  { schedule = name, next_fire = tonumber(next_fire) })
flush_events()
return created and 1 or 2
