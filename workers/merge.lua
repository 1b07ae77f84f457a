-- Merge one batch's partial flow tables into a capture run, atomically and exactly once.
--
-- KEYS: 1 done (set)  2 flows (hash)  3 rank:bi (zset)  4 totals (hash)
--       5 batch payload (string)  6 meta (hash)  7 finalized (string)  8 windows (zset)
-- ARGV: 1 batch seq  2 run key prefix ("fh:{run}:")  3 windows to keep (0: all)
--       4.. one table for the whole run, then one per window, each as:
--           window start ns ("" for the whole run) | packed flows (u8 keylen | key | stats,
--           see models/flows.py) | first ts (19 digits) | last ts | n | n field, increment pairs
-- A window's keys are the run's, under the prefix "<run prefix>w:<start>:" (models/keys.py);
-- they share the run's hash tag, so the script stays within one cluster slot.
-- Returns {status, new_flows}: status -1 = run no longer exists (replaced), 0 = batch already
-- merged (nothing changed), 1 = merged, 2 = merged and this was the last batch of the capture.
if redis.call('EXISTS', KEYS[6]) == 0 then return {-1, 0} end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  redis.call('DEL', KEYS[5])
  return {0, 0}
end

local FMT = '<ddddc19c19c19c19BB'
local NOFIRST = '9999999999999999999'

local function merge_table(flows, rank, totals, data, first, last, pairs)
  local n = #data
  local pos = 1
  local new_flows = 0
  while pos <= n do
    local klen = string.byte(data, pos)
    local k = string.sub(data, pos + 1, pos + klen)
    pos = pos + 1 + klen
    local pa, ba, pb, bb, fa, la, fb, lb, ga, gb, nxt = struct.unpack(FMT, data, pos)
    pos = nxt
    redis.call('ZINCRBY', rank, ba + bb, k)
    local old = redis.call('HGET', flows, k)
    if old then
      local opa, oba, opb, obb, ofa, ola, ofb, olb, oga, ogb = struct.unpack(FMT, old)
      pa = pa + opa; ba = ba + oba; pb = pb + opb; bb = bb + obb
      if ofa < fa then fa = ofa end
      if ola > la then la = ola end
      if ofb < fb then fb = ofb end
      if olb > lb then lb = olb end
      ga = bit.bor(ga, oga); gb = bit.bor(gb, ogb)
    else
      new_flows = new_flows + 1
    end
    redis.call('HSET', flows, k, struct.pack(FMT, pa, ba, pb, bb, fa, la, fb, lb, ga, gb))
  end
  for i = 1, #pairs, 2 do
    redis.call('HINCRBY', totals, pairs[i], pairs[i + 1])
  end
  if new_flows > 0 then redis.call('HINCRBY', totals, 'flows', new_flows) end
  if first ~= NOFIRST then  -- a table with packets
    local f = redis.call('HGET', totals, 'first_ns')
    if (not f) or first < f then redis.call('HSET', totals, 'first_ns', first) end
    local l = redis.call('HGET', totals, 'last_ns')
    if (not l) or last > l then redis.call('HSET', totals, 'last_ns', last) end
  end
  return new_flows
end

local prefix, keep = ARGV[2], tonumber(ARGV[3])
local new_flows = 0
local i = 4
while i <= #ARGV do
  local start, data, first, last, np = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local pairs = {}
  for j = 1, 2 * np do pairs[j] = ARGV[i + 4 + j] end
  i = i + 5 + 2 * np
  if start == '' then
    new_flows = merge_table(KEYS[2], KEYS[3], KEYS[4], data, first, last, pairs)
  else
    local w = prefix .. 'w:' .. start .. ':'
    merge_table(w .. 'flows', w .. 'rank:bi', w .. 'totals', data, first, last, pairs)
    redis.call('ZADD', KEYS[8], tonumber(start) / 1e9, start)
  end
end

if keep > 0 then  -- retention: drop the oldest windows beyond the newest `keep`
  local extra = redis.call('ZCARD', KEYS[8]) - keep
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', KEYS[8], 0, extra - 1)) do
      local w = prefix .. 'w:' .. old .. ':'
      redis.call('DEL', w .. 'flows', w .. 'rank:bi', w .. 'totals')
      redis.call('ZREM', KEYS[8], old)
    end
  end
end

redis.call('DEL', KEYS[5])
local total = redis.call('HGET', KEYS[6], 'total_batches')
if total and tonumber(total) == redis.call('SCARD', KEYS[1]) then
  if redis.call('SET', KEYS[7], '1', 'NX') then return {2, new_flows} end
end
return {1, new_flows}
