-- wrk script for the gateway benchmark (see bench/README.md).
--
-- Sends POST /v1/chat/completions with a small JSON body (or BENCH_BODY). The Authorization
-- header comes from the BENCH_AUTH environment variable (e.g.
-- "Bearer sk-..."); when it is unset or empty no Authorization header is sent. More headers
-- (e.g. "x-api-key: sk-..." and "anthropic-version: 2023-06-01" for POST /v1/messages) come
-- in BENCH_HEADERS, one "Name: value" a line.
--
-- done() prints one machine-readable line that bench/run.py parses:
--   BENCH_RESULT requests=N duration_us=N rps=X p50_ms=X p90_ms=X p99_ms=X
--     mean_ms=X max_ms=X non2xx=N connect=N read=N write=N timeout=N
-- non2xx counts every response whose status is not 2xx (counted per thread
-- in response() and summed in done()).

wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
-- another body (e.g. the "responses" target's POST /v1/responses) comes in BENCH_BODY
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
end
wrk.headers["Content-Type"] = "application/json"

local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local extra = os.getenv("BENCH_HEADERS")
if extra ~= nil then
  for line in string.gmatch(extra, "[^\n]+") do
    local name, value = string.match(line, "^%s*([^:]-)%s*:%s*(.-)%s*$")
    if name ~= nil and name ~= "" then
      wrk.headers[name] = value
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  local seconds = summary.duration / 1e6
  local rps = 0
  if seconds > 0 then
    rps = summary.requests / seconds
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.2f p50_ms=%.4f p90_ms=%.4f "
      .. "p99_ms=%.4f mean_ms=%.4f max_ms=%.4f non2xx=%d connect=%d read=%d "
      .. "write=%d timeout=%d\n",
    summary.requests, summary.duration, rps,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000,
    bad, e.connect, e.read, e.write, e.timeout))
end
