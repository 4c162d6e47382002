-- wrk script for the HTTP example's test: checks every response as it arrives.
-- A good response has a 2xx status and a body with exactly one version marker "v<N>" (the
-- build of the handler that wrote it). done() prints one line that run_test.sh reads:
--   RESULT requests=.. rps=.. non2xx=.. bad_bodies=.. versions=.. connect=.. read=..
--          write=.. timeout=.. p50_us=.. p99_us=.. max_us=..

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per thread (each wrk thread has its own Lua state).
responses, non2xx, bad_bodies, versions, sample = 0, 0, 0, 0, ""
local seen = {}

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local markers, version = 0, nil
  for v in string.gmatch(body or "", "v(%d+)") do
    markers = markers + 1
    version = v
  end
  if markers ~= 1 then
    bad_bodies = bad_bodies + 1
    if sample == "" then
      sample = string.format("status %d, %d markers: %q", status, markers, body or "")
    end
  elseif not seen[version] then
    seen[version] = true
    versions = versions + 1
  end
end

function done(summary, latency, requests)
  local n, non, bad, vers = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    n = n + t:get("responses")
    non = non + t:get("non2xx")
    bad = bad + t:get("bad_bodies")
    vers = math.max(vers, t:get("versions"))
    if t:get("sample") ~= "" then
      io.write("first bad body: ", t:get("sample"), "\n")
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d responses=%d rps=%.0f non2xx=%d bad_bodies=%d versions=%d " ..
    "connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, n, summary.requests / (summary.duration / 1e6), non, bad, vers,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
