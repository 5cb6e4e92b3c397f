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
local now = now_ms(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'cron', 'timezone', 'misfire', 'task', 'paused')
if f[1] == ARGV[4] and f[2] == ARGV[5] and f[3] == ARGV[6] and f[4] == ARGV[7] then return 0 end
local created = not f[1]
redis.call('HSET', KEYS[1], 'name', ARGV[3], 'cron', ARGV[4], 'timezone', ARGV[5],
  'misfire', ARGV[6], 'task', ARGV[7], 'next_fire', ARGV[8], 'updated_at', now)
if created then
  redis.call('HSET', KEYS[1], 'created_at', now, 'paused', '0', 'fires', 0, 'skipped', 0)
end
redis.call('ZADD', KEYS[2], f[5] == '1' and '+inf' or ARGV[8], ARGV[3])
emit_data(KEYS[3], KEYS[4], ARGV[2], 'schedule.' .. (created and 'added' or 'updated'),
  { schedule = ARGV[3], next_fire = tonumber(ARGV[8]) })
flush_events()
return created and 1 or 2
