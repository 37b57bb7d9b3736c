-- Rate-limit decisions for `n` requests of one key, atomically, as if they had come one after
-- another (ratelimit crate, src/redis.rs; mirrors src/algorithm.rs).
--
-- KEYS:    per window, its current counter, then (sliding only) the previous window's counter.
--          All share one hash tag, so they live in one Redis Cluster slot.
-- ARGV[1]: 1 for the sliding algorithm, 0 for fixed windows.
-- ARGV[2]: n, the number of requests decided (1, or more when concurrent checks were joined).
-- Then per window i: ARGV[4i-1] limit, ARGV[4i] window length (ms), ARGV[4i+1] time elapsed in
--          the current window (ms), ARGV[4i+2] TTL of its counter (ms).
-- Returns  {allowed, current_1, previous_1, current_2, previous_2, ...}: how many of the n
--          requests were allowed (the first `allowed` of them), and the counts as they were before.
--
-- Request j (0-based) is allowed only if every window allows it: count + j + 1 <= limit, where the
-- count is the current counter plus (sliding) the previous one weighted by the part of it still
-- within one window of now. A refusal counts nothing, so once one request is refused all later
-- ones are. The test is written exactly as in Rust so both compute it to the bit in doubles. Each
-- window's current counter grows by the number allowed and gets its TTL; if none is allowed,
-- nothing is written.
local sliding = ARGV[1] == '1'
local allowed = tonumber(ARGV[2])
local per = sliding and 2 or 1
local n = #KEYS / per
local values = redis.call('MGET', unpack(KEYS))
local reply = {0}
for i = 1, n do
  local limit = tonumber(ARGV[4 * i - 1])
  local len = tonumber(ARGV[4 * i])
  local elapsed = tonumber(ARGV[4 * i + 1])
  local cur = tonumber(values[per * (i - 1) + 1]) or 0
  local prev = 0
  if sliding then
    prev = tonumber(values[per * i]) or 0
  end
  reply[2 * i] = cur
  reply[2 * i + 1] = prev
  local fits = 0
  while fits < allowed and not (cur + fits + prev * ((len - elapsed) / len) + 1 > limit) do
    fits = fits + 1
  end
  allowed = fits
end
reply[1] = allowed
if allowed > 0 then
  for i = 1, n do
    local key = KEYS[per * (i - 1) + 1]
    redis.call('INCRBY', key, allowed)
    redis.call('PEXPIRE', key, ARGV[4 * i + 2])
  end
end
return reply
