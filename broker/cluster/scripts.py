"""The Lua scripts of the Redis engine: each one round trip, atomic on its shard.

Offsets: one counter per shard (``PREFIX:offset``) orders every message with history
on that shard. It counts from the Redis server's clock in milliseconds times 1000, so
that an offset also says roughly when it was given: a position whose topic's stream
has expired as a whole can then still be judged (older than the TTL: messages may be
lost). Offsets stay below 2^53, exact in Lua's doubles, until the year 2255.

Streams: one per topic (``PREFIX:h:TOPIC``), entry ID ``0-OFFSET``, fields ``p`` (the
delivery's JSON, its position inside) and ``x`` (when it expires, ms; 0: never).
Entries leave by XDEL, never by XTRIM, because only XDEL moves the stream's
``max-deleted-entry-id``, which tells a recovery whether something after its position
was dropped.

The epoch (``PREFIX:epoch``) names the history, and belongs to one run of one Redis
master: the scripts compare that master's replication ID (``INFO replication``) with the
one the epoch was started on (``PREFIX:epoch-replid``), and start a new epoch when they
differ. A Redis that restarted or lost its data, and a replica promoted by a failover,
have a new replication ID: what the old master acknowledged may be missing there
(replication is asynchronous, an AOF is synced once a second), so positions of the old
epoch no longer recover (``"recovered": false``), never wrongly.
"""

# Shared head of the scripts that read streams: expired entries are skipped, and count
# as dropped for completeness.
_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] epoch, KEYS[2] offset, KEYS[3] epoch-replid; ARGV[1]: an epoch to use if
# there is none or it is another master's (see the module's docstring). After _CLOCK.
# A new history's offsets start from the clock, so that its first positions handed out
# already say when they were given; a promoted replica's counter goes on from where its
# data stops (and the clock), so its offsets stay above every one it holds.
_EPOCH = """
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('GET', KEYS[3]) ~= replid then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[3], replid)
  redis.call('SET', KEYS[2], string.format('%.0f', now * 1000), 'NX')
end
"""

_MAX_DELETED = """
local function max_deleted(key)
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then
      return tonumber(string.match(info[i + 1], '-(%d+)$'))
    end
  end
  return 0
end
"""

# KEYS: epoch, offset, epoch-replid, stream, topics index.
# ARGV: new epoch, channel, pubsub header, payload head, payload tail, history_size,
#       ttl (ms, 0: none), topic.
# Returns {epoch, offset, how many subscriptions PUBLISH reached}.
PUBLISH = (
    _CLOCK
    + _EPOCH
    + """
local offset = redis.call('INCR', KEYS[2])
if offset < now * 1000 then
  offset = now * 1000
  redis.call('SET', KEYS[2], string.format('%.0f', offset))
end
local offset_text = string.format('%.0f', offset)
local payload = ARGV[4] .. epoch .. ':' .. offset_text .. ARGV[5]
local ttl = tonumber(ARGV[7])
local expires = 0
if ttl > 0 then
  expires = now + ttl
end
redis.call('XADD', KEYS[4], '0-' .. offset_text, 'p', payload, 'x', string.format('%.0f', expires))
local excess = redis.call('XLEN', KEYS[4]) - tonumber(ARGV[6])
if excess > 0 then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', excess)) do
    redis.call('XDEL', KEYS[4], entry[1])
  end
end
for _ = 1, 100 do
  local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
  if not oldest then
    break
  end
  local x = tonumber(oldest[2][4])
  if x == 0 or x > now then
    break
  end
  redis.call('XDEL', KEYS[4], oldest[1])
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('ZADD', KEYS[5], string.format('%.0f', now + ttl), ARGV[8])
else
  redis.call('PERSIST', KEYS[4])
  redis.call('ZADD', KEYS[5], '+inf', ARGV[8])
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('%.0f', now))
local receivers = redis.call('PUBLISH', ARGV[2], ARGV[3] .. payload)
return {epoch, offset_text, receivers}
"""
)

# KEYS: epoch, offset, epoch-replid, then streams.
# ARGV: new epoch, after (offset, exclusive), upto (offset, inclusive; '+': now),
#       marker channel, marker ('': none; published last, behind every message this
#       offset covers, see broker/core/snapshots.py).
# Returns {epoch, offset now, now (ms), then for each stream: exists (0/1),
#          complete (0/1), count, count pairs of (offset, payload), oldest first}.
RECOVER = (
    _CLOCK
    + _EPOCH
    + _MAX_DELETED
    + """
local result = {epoch, redis.call('GET', KEYS[2]) or '0', string.format('%.0f', now)}
local after = tonumber(ARGV[2])
local upto = ARGV[3]
if upto ~= '+' then
  upto = '0-' .. upto
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    table.insert(result, 0)
    table.insert(result, 1)
    table.insert(result, 0)
  else
    local complete = 1
    if max_deleted(KEYS[i]) > after then
      complete = 0
    end
    local found = {}
    for _, entry in ipairs(redis.call('XRANGE', KEYS[i], '(0-' .. ARGV[2], upto)) do
      local x = tonumber(entry[2][4])
      if x ~= 0 and x <= now then
        complete = 0
      else
        table.insert(found, string.sub(entry[1], 3))
        table.insert(found, entry[2][2])
      end
    end
    table.insert(result, 1)
    table.insert(result, complete)
    table.insert(result, #found / 2)
    for _, value in ipairs(found) do
      table.insert(result, value)
    end
  end
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return result
"""
)

# KEYS: epoch, offset, epoch-replid, then streams. ARGV: new epoch, how many of the newest
# per stream.
# Returns {epoch, offset now, then for each stream: count, count pairs of
#          (offset, payload), newest first}.
NEWEST = (
    _CLOCK
    + _EPOCH
    + """
local result = {epoch, redis.call('GET', KEYS[2]) or '0'}
for i = 4, #KEYS do
  local found = {}
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', ARGV[2])) do
    local x = tonumber(entry[2][4])
    if x == 0 or x > now then
      table.insert(found, string.sub(entry[1], 3))
      table.insert(found, entry[2][2])
    end
  end
  table.insert(result, #found / 2)
  for _, value in ipairs(found) do
    table.insert(result, value)
  end
end
return result
"""
)

# KEYS: presence expiry (zset), presence (hash).
# ARGV: client id, user (JSON), ttl (ms), channel, event ('' for none).
# Returns 1 if the client was not present before.
JOIN = (
    _CLOCK
    + """
local new = redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if new == 1 and ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return new
"""
)

# KEYS: presence expiry, presence. ARGV: client id, channel, event ('' for none).
# Returns 1 if the client was present.
LEAVE = """
local gone = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if gone == 1 and ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return gone
"""

# KEYS: presence expiry, presence. Returns the hash's fields and values, without
# the clients whose node stopped renewing them.
MEMBERS = (
    _CLOCK
    + """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
for _, client in ipairs(stale) do
  redis.call('HDEL', KEYS[2], client)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('HGETALL', KEYS[2])
"""
)

# KEYS: presence expiry, presence. ARGV: ttl (ms), then client ids still here.
RENEW = (
    _CLOCK
    + """
local expires = string.format('%.0f', now + tonumber(ARGV[1]))
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
"""
)

# Occupancy (webhooks' occupied and vacated, broker/cluster/occupancy.py): per filter a
# zset of the nodes holding it (score: when the node's claim expires), and per shard a
# zset of the occupied filters (score: the latest expiry of their nodes), which the
# sweep reads to find filters whose every node died.
_OCCUPIED_SCORE = """
local function occupied_until(filters, filter, expires)
  local score = tonumber(redis.call('ZSCORE', filters, filter))
  if not score or score < expires then
    redis.call('ZADD', filters, string.format('%.0f', expires), filter)
  end
end
"""

# KEYS: the occupied filters (zset), then the nodes of each filter (zsets).
# ARGV: node, ttl (ms), then the filters, in the order of their keys.
# Returns, for each filter: 0 (held already), 1 (occupied now) or 2 (every node holding
# it had died unannounced: vacated, then occupied now).
OCCUPY = (
    _CLOCK
    + _OCCUPIED_SCORE
    + """
local expires = now + tonumber(ARGV[2])
local result = {}
for i = 2, #KEYS do
  local stale = redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
  local held = redis.call('ZCARD', KEYS[i])
  redis.call('ZADD', KEYS[i], string.format('%.0f', expires), ARGV[1])
  occupied_until(KEYS[1], ARGV[i + 1], expires)
  if held > 0 then
    table.insert(result, 0)
  elseif stale > 0 then
    table.insert(result, 2)
  else
    table.insert(result, 1)
  end
end
return result
"""
)

# KEYS: the occupied filters, the filter's nodes. ARGV: node, filter.
# Returns 1 if the filter is vacated now (this node's leaving emptied it).
VACATE = (
    _CLOCK
    + """
if redis.call('ZCARD', KEYS[2]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[2]) > 0 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: the occupied filters. ARGV: the prefix of the filters' node zsets, how many at most.
# Returns the filters vacated now: those whose nodes all stopped renewing their claims.
SWEEP = (
    _CLOCK
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
                       'LIMIT', 0, tonumber(ARGV[2]))
local vacated = {}
for _, filter in ipairs(due) do
  local nodes = ARGV[1] .. filter
  redis.call('ZREMRANGEBYSCORE', nodes, '-inf', string.format('%.0f', now))
  local latest = redis.call('ZRANGE', nodes, -1, -1, 'WITHSCORES')
  if latest[2] then
    redis.call('ZADD', KEYS[1], latest[2], filter)
  else
    redis.call('DEL', nodes)
    redis.call('ZREM', KEYS[1], filter)
    table.insert(vacated, filter)
  end
end
return vacated
"""
)

# A user's connections across the cluster ([limits] max_connections_per_user): a zset of
# client ids, scored by when the node's claim on each expires (renewed like presence).
# KEYS: the user's zset. ARGV: client id, limit, ttl (ms). Returns 1 if admitted.
ADMIT_USER = (
    _CLOCK
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: a user's zset. ARGV: ttl (ms), then the client ids this node still has.
RENEW_USER = (
    _CLOCK
    + """
local expires = string.format('%.0f', now + tonumber(ARGV[1]))
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""
)

SCRIPTS = {
    "PUBLISH": PUBLISH,
    "RECOVER": RECOVER,
    "NEWEST": NEWEST,
    "JOIN": JOIN,
    "LEAVE": LEAVE,
    "MEMBERS": MEMBERS,
    "RENEW": RENEW,
    "OCCUPY": OCCUPY,
    "VACATE": VACATE,
    "SWEEP": SWEEP,
    "ADMIT_USER": ADMIT_USER,
    "RENEW_USER": RENEW_USER,
}
