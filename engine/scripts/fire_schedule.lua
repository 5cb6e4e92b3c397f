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
local SCHEDULE_KEY, SCHEDULES, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, name, tick = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local next_fire, task_id, skip_reason = ARGV[5], ARGV[6], ARGV[7]
local now = now_ms(now_arg)
local f = redis.call('HMGET', SCHEDULE_KEY, 'next_fire', 'paused')
if not f[1] then return -1 end
if f[1] ~= tick then return 0 end
redis.call('HSET', SCHEDULE_KEY, 'next_fire', next_fire, 'last_tick', tick, 'last_error', skip_reason)
local data = { schedule = name, tick = tonumber(tick), next_fire = tonumber(next_fire) }
if task_id ~= '' then
  redis.call('HSET', SCHEDULE_KEY, 'last_fire', now, 'last_task_id', task_id)
  redis.call('HINCRBY', SCHEDULE_KEY, 'fires', 1)
  data.task_id = task_id
else
  redis.call('HINCRBY', SCHEDULE_KEY, 'skipped', 1)
  data.reason = skip_reason
end
-- A schedule paused while this tick was in flight stays out of the due index.
if f[2] ~= '1' then redis.call('ZADD', SCHEDULES, next_fire, name) end
emit_data(EVENTS_LOG, CHANNEL, maxlen, task_id ~= '' and 'schedule.fired' or 'schedule.skipped', data)
flush_events()
return 1
