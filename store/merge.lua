-- Merge one shard's part of a batch into a run, atomically and exactly once per (batch, shard).
--
-- KEYS: 1 live (string)  2 done (set)  3 flows (hash)  4 rank:bi (zset)  5 totals (hash)
--       6 windows (zset)  7 done_below (string: every batch below it is merged, and no longer
--       listed in done; see store/captures.py compact_done),
--       then flows/rank:bi/totals of each window of the batch (ARGV order),
--       then flows/rank:bi/totals of each window that retention may drop (ARGV 5.. order)
-- ARGV: 1 batch seq  2 windows to keep (0: all)  3 windows in the batch  4 windows declared
--       for dropping, then their starts; then one table for the whole part, then one per window,
--       each as: window start ns ("" for the whole part) | packed flows (u8 keylen | key |
--       stats, see models/flows.py; no key twice) | first ts (19 digits) | last ts | n | n
--       field, increment pairs
-- Every key the script touches is in KEYS, all in the shard's hash tag (one cluster slot).
-- Retention also prunes the whole-capture table: a flow of a dropped window whose last packet
-- is older than the oldest window kept leaves the flows hash and the ranking (the capture's
-- packet and byte totals keep counting), so the table holds the flows of the kept windows.
-- Returns {status, new_flows}: status -1 = the run no longer exists (replaced), 0 = this part
-- was merged before (nothing changed), 1 = merged; or {-2, 0, start...}: retention must drop
-- windows that were not declared (nothing changed: call again declaring them).
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {0, 0} end
local below = redis.call('GET', KEYS[7])
if below and tonumber(ARGV[1]) < tonumber(below) then return {0, 0} end

local keep, nwin, ndrop = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tables = {}
local i = 5 + ndrop
while i <= #ARGV do
  local np = tonumber(ARGV[i + 4])
  local pairs_ = {}
  for j = 1, 2 * np do pairs_[j] = ARGV[i + 4 + j] end
  tables[#tables + 1] = {start = ARGV[i], data = ARGV[i + 1], first = ARGV[i + 2],
                         last = ARGV[i + 3], pairs = pairs_}
  i = i + 5 + 2 * np
end

-- retention: which windows remain beyond the newest `keep` once this batch's are added
local drop = {}
local cutoff = nil  -- the oldest kept window's start, 19 digits, when windows are dropped
if keep > 0 and nwin > 0 then
  local score = {}
  local cur = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
  for j = 1, #cur, 2 do score[cur[j]] = tonumber(cur[j + 1]) end
  for w = 2, #tables do score[tables[w].start] = tonumber(tables[w].start) / 1e9 end
  local list = {}
  for s, sc in pairs(score) do list[#list + 1] = {s, sc} end
  table.sort(list, function(a, b) return a[2] < b[2] end)
  local declared = {}
  for j = 1, ndrop do declared[ARGV[4 + j]] = 7 + 3 * nwin + 3 * (j - 1) end
  local missing = {-2, 0}
  for j = 1, #list - keep do
    local s = list[j][1]
    if declared[s] then drop[#drop + 1] = {s, declared[s]} else missing[#missing + 1] = s end
  end
  if #missing > 2 then return missing end
  if #list > keep then
    local s = list[#list - keep + 1][1]
    cutoff = string.rep('0', 19 - #s) .. s
  end
end

redis.call('SADD', KEYS[2], ARGV[1])

local FMT = '<ddddc19c19c19c19BB'
local SIZE = struct.size(FMT)
local NOFIRST = '9999999999999999999'
-- flows per HMGET/HSET/ZADD: three calls per CHUNK flows, far inside Lua's unpack() limit
local CHUNK = 1000

-- A part's flows are distinct keys. Each chunk is read with one HMGET, then written with one
-- HSET and one ZADD: a flow's rank score is its total bytes (A to B plus B to A), which the
-- merged value holds, so setting it equals incrementing it by the part's bytes. A new flow's
-- value is stored as it came.
local function merge_table(flows, rank, totals, t)
  local data = t.data
  local n = #data
  local pos = 1
  local new_flows = 0
  while pos <= n do
    local ks, vs, m = {}, {}, 0
    while pos <= n and m < CHUNK do
      local klen = string.byte(data, pos)
      m = m + 1
      ks[m] = string.sub(data, pos + 1, pos + klen)
      vs[m] = string.sub(data, pos + 1 + klen, pos + klen + SIZE)
      pos = pos + 1 + klen + SIZE
    end
    local olds = redis.call('HMGET', flows, unpack(ks))
    local hset, zadd = {}, {}
    for j = 1, m do
      local v, old, total = vs[j], olds[j], 0
      if old then
        local pa, ba, pb, bb, fa, la, fb, lb, ga, gb = struct.unpack(FMT, v)
        local opa, oba, opb, obb, ofa, ola, ofb, olb, oga, ogb = struct.unpack(FMT, old)
        pa = pa + opa; ba = ba + oba; pb = pb + opb; bb = bb + obb
        if ofa < fa then fa = ofa end
        if ola > la then la = ola end
        if ofb < fb then fb = ofb end
        if olb > lb then lb = olb end
        ga = bit.bor(ga, oga); gb = bit.bor(gb, ogb)
        v = struct.pack(FMT, pa, ba, pb, bb, fa, la, fb, lb, ga, gb)
        total = ba + bb
      else
        local _, ba, _, bb = struct.unpack('<dddd', v)
        total = ba + bb
        new_flows = new_flows + 1
      end
      hset[2 * j - 1] = ks[j]; hset[2 * j] = v
      zadd[2 * j - 1] = string.format('%.17g', total); zadd[2 * j] = ks[j]
    end
    redis.call('HSET', flows, unpack(hset))
    redis.call('ZADD', rank, unpack(zadd))
  end
  local p = t.pairs
  for j = 1, #p, 2 do
    redis.call('HINCRBY', totals, p[j], p[j + 1])
  end
  if new_flows > 0 then redis.call('HINCRBY', totals, 'flows', new_flows) end
  if t.first ~= NOFIRST then  -- a part carrying the batch's packet totals
    local f = redis.call('HGET', totals, 'first_ns')
    if (not f) or t.first < f then redis.call('HSET', totals, 'first_ns', t.first) end
    local l = redis.call('HGET', totals, 'last_ns')
    if (not l) or t.last > l then redis.call('HSET', totals, 'last_ns', t.last) end
  end
  return new_flows
end

local new_flows = merge_table(KEYS[3], KEYS[4], KEYS[5], tables[1])
for w = 2, #tables do
  local base = 7 + 3 * (w - 2)
  merge_table(KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], tables[w])
  redis.call('ZADD', KEYS[6], tonumber(tables[w].start) / 1e9, tables[w].start)
end
-- flows last seen before the oldest kept window leave the whole-capture table: only flows of a
-- dropped window can have become so (the others were pruned with an earlier window, or are
-- in a kept one)
local function prune(window_flows)
  local ks = redis.call('HKEYS', window_flows)
  for j = 1, #ks, CHUNK do
    local part = {unpack(ks, j, math.min(j + CHUNK - 1, #ks))}
    local vals = redis.call('HMGET', KEYS[3], unpack(part))
    local stale = {}
    for m = 1, #part do
      local v = vals[m]
      if v then
        local _, _, _, _, _, la, _, lb = struct.unpack(FMT, v)
        if la < cutoff and lb < cutoff then stale[#stale + 1] = part[m] end
      end
    end
    if #stale > 0 then
      redis.call('HDEL', KEYS[3], unpack(stale))
      redis.call('ZREM', KEYS[4], unpack(stale))
    end
  end
end

for _, d in ipairs(drop) do
  if cutoff then prune(KEYS[d[2] + 1]) end
  redis.call('DEL', KEYS[d[2] + 1], KEYS[d[2] + 2], KEYS[d[2] + 3])
  redis.call('ZREM', KEYS[6], d[1])
end
return {1, new_flows}
