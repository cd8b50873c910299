"""The Lua scripts of each conversation's line (`core.queue`): each runs atomically in
the conversation's Redis Cluster slot. Key layout: see `core.queue`."""

# KEYS: claim, follow, line, lease.
# ARGV: lease ms, token, member, addressed (0/1), follow (0/1), follow ttl ms, line ttl ms.
# Returns 1 admitted, 0 duplicate, -1 not for us (neither addressed nor followed).
ADMIT = """
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then return 0 end
if ARGV[5] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[6]) end
redis.call('ZADD', KEYS[3], 0, ARGV[3])
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
return 1
"""

# Whose turn? KEYS: line, cur. ARGV: my member. A member is alive while its lease (or the
# pause of a turn waiting for a person's approval, `:p:`) exists.
# Returns 1 (mine: cur is set to me), 0 (wait), -1 (I am no longer in line: my lease ran out).
TURN = """
local me = ARGV[1]
local function alive(member)
  return redis.call('EXISTS', KEYS[1] .. ':a:' .. member, KEYS[1] .. ':p:' .. member) > 0
end
local cur = redis.call('GET', KEYS[2])
if cur then
  if cur == me then return 1 end
  if alive(cur) then return 0 end
  redis.call('ZREM', KEYS[1], cur)
  redis.call('DEL', KEYS[2])
end
for _ = 1, 1000 do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not first then return -1 end
  if alive(first) then
    if first == me then
      redis.call('SET', KEYS[2], me)
      redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
      return 1
    end
    return 0
  end
  redis.call('ZREM', KEYS[1], first)
end
return 0
"""

# Leave the line. KEYS: line, cur, lease. ARGV: member, line ttl ms, wake channel.
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[1] .. ':p:' .. ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""

# Renew the lease (KEYS[1]) and the claim (KEYS[2]) if they still hold our token.
# ARGV: token, ms. Returns 1 if the lease was still ours, else 0.
RENEW = """
local ok = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    if i == 1 then ok = 1 end
  end
end
return ok
"""

# Take a lost place in line again (same position). KEYS: claim, line, lease.
# ARGV: token, member, lease ms, line ttl ms. Returns 0 if another process has the event.
REJOIN = """
local claim = redis.call('GET', KEYS[1])
if claim and claim ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# Take over a paused turn whose holder is gone. KEYS: lease, pause, claim.
# ARGV: token, lease ms. Returns 1 when taken.
TAKE_OVER = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[3]) ~= 'done' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2]) end
return 1
"""

# The claim is done (answered or told): keep it as "done" so redeliveries are duplicates.
FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
  return 1
end
return 0
"""


# Ask the answer being written in a line to stop. KEYS: line, cur. ARGV: ttl ms, wake
# channel. Returns the member asked to stop, or "" if nothing is being answered.
STOP = """
local cur = redis.call('GET', KEYS[2])
if not cur then return '' end
redis.call('SET', KEYS[1] .. ':stop', cur, 'PX', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'stop')
return cur
"""
