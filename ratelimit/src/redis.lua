-- One rate-limit decision, atomically (ratelimit crate, src/redis.rs; mirrors src/algorithm.rs).
--
-- KEYS:    per window, its current counter, then (sliding only) the previous window's counter.
--          All share one hash tag, so they live in one Redis Cluster slot.
-- ARGV[1]: 1 for the sliding algorithm, 0 for fixed windows.
-- Then per window i: ARGV[4i-2] limit, ARGV[4i-1] window length (ms), ARGV[4i] time elapsed in
--          the current window (ms), ARGV[4i+1] TTL of its counter (ms).
-- Returns  {allowed (1 or 0), current_1, previous_1, current_2, previous_2, ...}: the counts as
--          they were before this request.
--
-- Allowed only if every window allows: count + 1 <= limit, where the count is the current counter
-- plus (sliding) the previous one weighted by the part of it still within one window of now. The
-- test is written exactly as in Rust so both compute it to the bit in doubles. When allowed, each
-- window's current counter is incremented and given its TTL; when refused, nothing is written.
local sliding = ARGV[1] == '1'
local per = sliding and 2 or 1
local n = #KEYS / per
local values = redis.call('MGET', unpack(KEYS))
local reply = {1}
for i = 1, n do
  local limit = tonumber(ARGV[4 * i - 2])
  local len = tonumber(ARGV[4 * i - 1])
  local elapsed = tonumber(ARGV[4 * i])
  local cur = tonumber(values[per * (i - 1) + 1]) or 0
  local prev = 0
  if sliding then
    prev = tonumber(values[per * i]) or 0
  end
  reply[2 * i] = cur
  reply[2 * i + 1] = prev
  if cur + prev * ((len - elapsed) / len) + 1 > limit then
    reply[1] = 0
  end
end
if reply[1] == 1 then
  for i = 1, n do
    local key = KEYS[per * (i - 1) + 1]
    redis.call('INCR', key)
    redis.call('PEXPIRE', key, ARGV[4 * i + 1])
  end
end
return reply
