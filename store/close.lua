-- Record that a run has all its batches enqueued, and claim the report if they are all merged.
-- KEYS: 1 done (set)  2 meta (hash)  3 finalized (string);  ARGV: 1 total batches
-- Merged batches: SCARD(done) + the meta field done_below (see store/finish.lua).
-- Returns -1 if the run no longer exists, 1 if the caller must enqueue the report, else 0.
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('HSET', KEYS[2], 'total_batches', ARGV[1], 'state', 'processing')
local below = tonumber(redis.call('HGET', KEYS[2], 'done_below') or '0')
if tonumber(ARGV[1]) == redis.call('SCARD', KEYS[1]) + below then
  if redis.call('SET', KEYS[3], '1', 'NX') then return 1 end
end
return 0
