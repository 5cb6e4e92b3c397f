--[[ open_batch: a staged batch parent → running, once all its children are in.
  submit.lua writes a batch parent as 'staging' (in no index, its idempotency key not yet
  taken) and its children after it, in chunks; this call makes the batch visible in one
  step, so a batch that fails half-way (engine/batch.py removes what was written) is never
  seen, never counted and never returned for its idempotency key. Children that ended
  meanwhile were counted in the parent; if all have, the batch ends here.
  KEYS[1] idempotency key prefix
  KEYS[-9..-1] the nine batch keys (see lib.lua; the first is the task key prefix)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length
  ARGV[3] parent id   ARGV[4] the batch's idempotency key ('' when none)   ARGV[5] its
  content fingerprint   ARGV[6] idempotency TTL in ms   ARGV[7] TTL of a finished task in ms
  Returns: {1, id} opened; {0, other id} the idempotency key names another batch (which
           stands: the caller removes this one); {-5, other id} the same, with other
           content; {-2, status} the parent is not staging (opened already, or gone: '').
]]
local IDEM_PREFIX = KEYS[1]
local now_arg, maxlen, id, idem_key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fingerprint, idem_ttl, ttl = ARGV[5], ARGV[6], ARGV[7]
local now = now_ms(now_arg)
local K = batch_keys()
local key = K.task .. id
local f = redis.call('HMGET', key, 'status', 'total', 'n_completed', 'n_failed',
  'n_cancelled', 'waiters', 'created_at')
if f[1] ~= 'staging' then return { -2, f[1] or '' } end
if idem_key ~= '' then
  local idem = IDEM_PREFIX .. idem_key
  local held, differs = idem_held(idem, fingerprint)
  if held and held ~= id then return { differs and -5 or 0, held } end
  idem_take(idem, id, fingerprint, idem_ttl)
end
redis.call('HSET', key, 'status', 'running')
redis.call('ZADD', K.running, NOW_TEXT, id)
emit(K.log, K.channel, maxlen, 'task.submitted', id, 'running', { batch = true })
local total = tonumber(f[2])
local counts = { f[2], tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), 'running', f[6], f[7] }
if counts[2] + counts[3] + counts[4] >= total then
  finish_parent(K, id, counts, now, maxlen, ttl)
end
flush_events()
return { 1, id }
