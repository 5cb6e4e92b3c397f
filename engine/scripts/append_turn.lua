--[[ append_turn: a conversation task's query and answer join its session's conversation.
  KEYS[1] conversation:<session id> (its JSON turns, oldest first; engine/agent/conversation.py)
  ARGV[1] now override in ms ('' = Redis TIME)   ARGV[2] events stream max length (unused)
  ARGV[3] the task id   ARGV[4] the query   ARGV[5] the answer
  ARGV[6] most messages kept   ARGV[7] most characters kept (the token cap x 4)
  ARGV[8] the conversation's TTL in ms, from this turn
  Returns: {code, messages kept}: 1 appended; 0 the task's turn is there already (an earlier
           attempt appended it and its outcome was lost): nothing is appended twice.
  The two turns go in together, so no attempt leaves half a turn. Older messages go first,
  and an answer whose query went goes with it; the newest exchange is always kept, even
  alone over the caps. A key of another type (a hand-edited Redis) is replaced.
]]
local KEY = KEYS[1]
local now_arg, task_id, query, answer = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
local most_messages, most_chars, ttl = ARGV[6], ARGV[7], ARGV[8]
local now = now_ms(now_arg)
most_messages, most_chars = tonumber(most_messages), tonumber(most_chars)

-- UTF-8 characters: every byte but those that continue a character.
local function chars(text)
  local _, continuing = string.gsub(text, '[\128-\191]', '')
  return #text - continuing
end

local listed = redis.pcall('LRANGE', KEY, 0, -1)
if listed.err then
  redis.call('DEL', KEY)
  listed = {}
end
local roles, sizes, total = {}, {}, chars(query) + chars(answer)
for i, entry in ipairs(listed) do
  local ok, turn = pcall(cjson.decode, entry)
  sizes[i] = 0
  if ok and type(turn) == 'table' then
    if turn.task_id == task_id then return { 0, #listed } end
    roles[i] = turn.role
    if type(turn.content) == 'string' then sizes[i] = chars(turn.content) end
  end
  total = total + sizes[i]
end

local function turn(role, content)
  return cjson.encode({ role = role, content = content, task_id = task_id, at = now })
end
redis.call('RPUSH', KEY, turn('user', query), turn('assistant', answer))
local count, drop = #listed + 2, 0
while drop < #listed and (count - drop > most_messages or total > most_chars) do
  drop = drop + 1
  total = total - sizes[drop]
end
while drop < #listed and roles[drop + 1] ~= 'user' do   -- no history opens with an answer
  drop = drop + 1
end
if drop > 0 then redis.call('LTRIM', KEY, drop, -1) end
redis.call('PEXPIRE', KEY, ttl)
return { 1, count - drop }
