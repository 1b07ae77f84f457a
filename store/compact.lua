-- Forget the done markers of old batches: a run that runs for weeks (a live capture) must not
-- keep one set member per batch forever. Every batch below done_below is merged.
-- Run level, KEYS: 1 done (set)  2 meta (hash);  ARGV: 1 "run"  2 markers to keep
--   Finds the batches merged without a gap from done_below on (at most 100,000 per call),
--   moves done_below up to that prefix less the markers kept (recent batches keep theirs, so a
--   part lost by a failover is still found), removes their members. Returns done_below.
-- Shard level, KEYS: 1 the shard's done (set)  2 its done_below (string)  3 its live marker;
--   ARGV: 1 "shard"
--   2 the run's done_below: every part below it is merged; removes their members.
if ARGV[1] == 'run' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
  local below = tonumber(redis.call('HGET', KEYS[2], 'done_below') or '0')
  local n = below
  while n < below + 100000 and redis.call('SISMEMBER', KEYS[1], n) == 1 do n = n + 1 end
  local target = n - tonumber(ARGV[2])
  if target <= below then return below end
  for i = below, target - 1 do redis.call('SREM', KEYS[1], i) end
  redis.call('HSET', KEYS[2], 'done_below', target)
  return target
end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local below = tonumber(redis.call('GET', KEYS[2]) or '0')
local target = tonumber(ARGV[2])
if target <= below then return below end
for i = below, target - 1 do redis.call('SREM', KEYS[1], i) end
redis.call('SET', KEYS[2], target)
return target
