--[[ fire_schedule: record one tick of a recurring schedule and advance its next fire time.
  The caller read next fire time T, submitted the tick's task through submit (idempotency key
  schedule:<name>:<T>, so a second submit for T returns the first task and never a new one)
  and computed the next tick from now. This script advances only if the stored next fire
  time is still T: of several schedulers racing for one tick, exactly one advances it.
  KEYS[1] the schedule's hash   KEYS[2] schedules   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] name   ARGV[4] T, the next fire time (ms) the caller computed from
  ARGV[5] the new next fire time in ms   ARGV[6] id of the task submitted for T
          ('' = the tick was skipped: misfire policy "skip", or its task could not be built)
  ARGV[7] why the tick was skipped ('' = it fired)
  Returns: 1 advanced, 0 stale (another process advanced it first, or it was redefined),
           -1 no such schedule (removed meanwhile).
]]
local now = now_ms(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'next_fire', 'paused')
if not f[1] then return -1 end
if f[1] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'next_fire', ARGV[5], 'last_tick', ARGV[4], 'last_error', ARGV[7])
local data = { schedule = ARGV[3], tick = tonumber(ARGV[4]), next_fire = tonumber(ARGV[5]) }
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'last_fire', now, 'last_task_id', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'fires', 1)
  data.task_id = ARGV[6]
else
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
  data.reason = ARGV[7]
end
-- A schedule paused while this tick was in flight stays out of the due index.
if f[2] ~= '1' then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3]) end
emit_data(KEYS[3], KEYS[4], ARGV[2], ARGV[6] ~= '' and 'schedule.fired' or 'schedule.skipped', data)
flush_events()
return 1
