--[[ worker_stop: a worker leaves the registry after a clean shutdown.
  KEYS[1] workers   KEYS[2] this worker's hash   KEYS[3] events:log   KEYS[4] events (channel)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] worker id   ARGV[4] how long the stopped worker's hash is kept, in ms
  ARGV[5] number of worker fields P   ARGV[6..] P field/value pairs (final stats)
  Returns: 1.
]]
local now = now_ms(ARGV[1])
local fields = { 'state', 'stopped', 'stopped_at', now }
for i = 6, 5 + 2 * tonumber(ARGV[5]) do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[1], ARGV[3])
emit_data(KEYS[3], KEYS[4], ARGV[2], 'worker.stopped', { worker_id = ARGV[3] })
flush_events()
return 1
