--[[ worker_stop: a worker leaves the registry after a clean shutdown.
  KEYS[1] workers   KEYS[2] this worker's hash   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] worker id   ARGV[4] how long the stopped worker's hash is kept, in ms
  ARGV[5] number of worker fields P   ARGV[6..] P field/value pairs (final stats)
  Returns: 1.
]]
local WORKERS, WORKER_KEY, EVENTS_LOG, CHANNEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_arg, maxlen, worker, record_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n_fields = ARGV[5]
local now = now_ms(now_arg)
local fields = { 'state', 'stopped', 'stopped_at', now }
for i = 6, 5 + 2 * tonumber(n_fields) do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', WORKER_KEY, unpack(fields))
redis.call('PEXPIRE', WORKER_KEY, record_ttl)
redis.call('ZREM', WORKERS, worker)
emit_data(EVENTS_LOG, CHANNEL, maxlen, 'worker.stopped', { worker_id = worker })
flush_events()
return 1
