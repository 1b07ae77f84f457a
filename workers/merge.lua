-- Merge one batch's partial flow table into a capture run, atomically and exactly once.
--
-- KEYS: 1 done (set)  2 flows (hash)  3 rank:bi (zset)  4 totals (hash)
--       5 batch payload (string)  6 meta (hash)  7 finalized (string)
-- ARGV: 1 batch seq  2 packed flows (u8 keylen | key | stats, see models/flows.py)
--       3 batch first ts (19 digits)  4 batch last ts  5.. field, increment pairs for totals
-- Returns {status, new_flows}: status -1 = run no longer exists (replaced), 0 = batch already
-- merged (nothing changed), 1 = merged, 2 = merged and this was the last batch of the capture.
if redis.call('EXISTS', KEYS[6]) == 0 then return {-1, 0} end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  redis.call('DEL', KEYS[5])
  return {0, 0}
end

local FMT = '<ddddc19c19c19c19BB'
local data = ARGV[2]
local n = #data
local pos = 1
local new_flows = 0
local hget, hset, zincr = 'HGET', 'HSET', 'ZINCRBY'
while pos <= n do
  local klen = string.byte(data, pos)
  local k = string.sub(data, pos + 1, pos + klen)
  pos = pos + 1 + klen
  local pa, ba, pb, bb, fa, la, fb, lb, ga, gb, nxt = struct.unpack(FMT, data, pos)
  pos = nxt
  redis.call(zincr, KEYS[3], ba + bb, k)
  local old = redis.call(hget, KEYS[2], k)
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
  redis.call(hset, KEYS[2], k, struct.pack(FMT, pa, ba, pb, bb, fa, la, fb, lb, ga, gb))
end

for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
end
if new_flows > 0 then redis.call('HINCRBY', KEYS[4], 'flows', new_flows) end
if ARGV[3] ~= '9999999999999999999' then  -- a batch with packets
  local f = redis.call('HGET', KEYS[4], 'first_ns')
  if (not f) or ARGV[3] < f then redis.call('HSET', KEYS[4], 'first_ns', ARGV[3]) end
  local l = redis.call('HGET', KEYS[4], 'last_ns')
  if (not l) or ARGV[4] > l then redis.call('HSET', KEYS[4], 'last_ns', ARGV[4]) end
end
redis.call('DEL', KEYS[5])

local total = redis.call('HGET', KEYS[6], 'total_batches')
if total and tonumber(total) == redis.call('SCARD', KEYS[1]) then
  if redis.call('SET', KEYS[7], '1', 'NX') then return {2, new_flows} end
end
return {1, new_flows}
