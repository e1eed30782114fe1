-- Write one frame's result atomically and idempotently.
-- KEYS: result hash, heatmap, per-line results stream, lines set
-- ARGV: ttl_s, stream_maxlen, heatmap_bytes, frame_id, line, verdict, score, then field/value pairs of the result hash
-- Returns 1 when the frame was new, 0 when this overwrote an earlier delivery (no second stream entry).
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[5])
if existed == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'frame_id', ARGV[4], 'verdict', ARGV[6], 'score', ARGV[7])
  return 1
end
return 0
