-- Count one batch as merged once every shard part of it is merged (see store/merge.lua).
-- KEYS: 1 done (set)  2 meta (hash)  3 finalized (string);  ARGV: 1 batch seq
-- Batches below the meta field done_below are merged and no longer listed in done (see
-- store/captures.py compact_done): the run's count of merged batches is SCARD + done_below.
-- Returns -1 if the run no longer exists, 0 if the batch was counted before, 1 if counted now,
-- 2 if counted and it was the last batch of a closed run: the caller enqueues the report.
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local below = tonumber(redis.call('HGET', KEYS[2], 'done_below') or '0')
if tonumber(ARGV[1]) < below then return 0 end
local added = redis.call('SADD', KEYS[1], ARGV[1])
local total = redis.call('HGET', KEYS[2], 'total_batches')
if total and tonumber(total) == redis.call('SCARD', KEYS[1]) + below then
  if redis.call('SET', KEYS[3], '1', 'NX') then return 2 end
end
return added
