-- Write one frame's result atomically and idempotently.
-- KEYS: result hash, heatmap, per-line results stream, lines set, anomalies stream, preview
-- ARGV: ttl_s, stream_maxlen, heatmap_bytes, frame_id, line, verdict, score, preview_bytes ('' = none),
--       station, threshold, category, then field/value pairs of the result hash
-- Returns 1 when the frame was new, 0 when this overwrote an earlier delivery (no second stream entry).
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[1])
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[6], ARGV[8], 'EX', ARGV[1])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[5])
if existed == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'frame_id', ARGV[4], 'verdict', ARGV[6], 'score', ARGV[7],
             'station', ARGV[9], 'threshold', ARGV[10], 'category', ARGV[11])
  if ARGV[6] == 'anomalous' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'frame_id', ARGV[4], 'line', ARGV[5], 'station', ARGV[9],
               'category', ARGV[11], 'score', ARGV[7], 'threshold', ARGV[10])
  end
  return 1
end
return 0
