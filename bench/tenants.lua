-- wrk script: like ../shared/bench/replay.lua, but spreads deliveries over TENANTS tenants (/webhooks/bench<i>/moda)
-- env: REQS=file  TENANTS=n
function init(args)
  local t = tonumber(os.getenv("TENANTS") or "100")
  reqs = {}
  local i = 0
  for line in io.lines(os.getenv("REQS")) do
    local ts, sig, eid, body = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)")
    reqs[#reqs + 1] = wrk.format("POST", string.format("/webhooks/bench%d/moda", i % t), {
      ["Content-Type"] = "application/json", ["X-Webhook-Timestamp"] = ts,
      ["X-Webhook-Signature"] = "v1=" .. sig, ["X-Idempotency-Key"] = eid }, body)
    i = i + 1
  end
  idx = 0
end
function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end
function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
