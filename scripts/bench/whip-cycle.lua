-- wrk script for scripts/bench-proxy: WHIP session cycles, POST of an SDP offer followed by
-- DELETE of the Location that answered it.
--
-- Environment:
--   BENCH_OFFER              path of the SDP offer to POST (sent with Content-Type application/sdp)
--   BENCH_POST_PATH          path to POST to (default /whip/bench)
--   BENCH_CYCLES_PER_THREAD  stop each thread after this many successful DELETEs (0: run for -d)
--   BENCH_DONE_DIR           with a cycle cap: a thread that reaches it creates a file here
--                            (wrk's main thread sleeps for -d regardless, so the caller watches
--                            for one file per thread and then sends wrk SIGINT to end the run)
--
-- Each wrk thread keeps a queue of Locations from 201 answers; whenever one of its connections
-- is ready to send and the queue is not empty it sends a DELETE of the oldest one, otherwise a
-- new POST. So every session that was created is deleted (except at most a few per connection
-- still queued when the run ends), and the requests alternate POST, DELETE on the whole.
-- A 201 is counted as a created session, a 200 as a deleted one; every other status, and a 201
-- without a Location, counts as an error. done() prints "WG key value" lines for the caller.

local offer_path = os.getenv("BENCH_OFFER")
local post_path = os.getenv("BENCH_POST_PATH") or "/whip/bench"
local cap = tonumber(os.getenv("BENCH_CYCLES_PER_THREAD") or "0") or 0
local done_dir = os.getenv("BENCH_DONE_DIR")

local offer
do
  local f = assert(io.open(offer_path, "rb"), "BENCH_OFFER: cannot open " .. tostring(offer_path))
  offer = f:read("*a")
  f:close()
end

-- Per-thread counters: globals, so that done() can read them with thread:get().
created, deleted, bad_status, no_location, foreign_location = 0, 0, 0, 0, 0
first_bad = ""
tid = 0

local post_request
local queue, qhead, qtail = {}, 1, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  post_request = wrk.format("POST", post_path, { ["Content-Type"] = "application/sdp" }, offer)
end

function request()
  if qhead <= qtail then
    local path = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
    return wrk.format("DELETE", path, {})
  end
  return post_request
end

function response(status, headers, body)
  if status == 201 then
    local loc = headers["Location"] or headers["location"]
    if not loc then
      no_location = no_location + 1
      return
    end
    local path = loc
    local origin = loc:match("^https?://[^/]+")
    if origin then
      path = loc:sub(#origin + 1)
      if path == "" then path = "/" end
    end
    created = created + 1
    qtail = qtail + 1
    queue[qtail] = path
  elseif status == 200 then
    deleted = deleted + 1
    if cap > 0 and deleted == cap then
      if done_dir and done_dir ~= "" then
        local f = io.open(done_dir .. "/thread-" .. tid, "w")
        if f then f:close() end
      end
      wrk.thread:stop()
    end
  else
    bad_status = bad_status + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. (body or ""):sub(1, 160):gsub("[\r\n]+", " ")
    end
  end
end

function done(summary, latency, requests)
  local c, d, b, n = 0, 0, 0, 0
  local fb = ""
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    d = d + t:get("deleted")
    b = b + t:get("bad_status")
    n = n + t:get("no_location")
    if fb == "" then fb = t:get("first_bad") end
  end
  local e = summary.errors
  local out = {
    { "duration_us", summary.duration },
    { "requests", summary.requests },
    { "created", c },
    { "deleted", d },
    { "bad_status", b },
    { "no_location", n },
    { "err_connect", e.connect },
    { "err_read", e.read },
    { "err_write", e.write },
    { "err_timeout", e.timeout },
    { "lat_p50_us", latency:percentile(50) },
    { "lat_p99_us", latency:percentile(99) },
    { "lat_p999_us", latency:percentile(99.9) },
    { "lat_max_us", latency.max },
    { "lat_mean_us", latency.mean },
  }
  for _, kv in ipairs(out) do
    io.write(string.format("WG %s %s\n", kv[1], tostring(kv[2])))
  end
  io.write("WG first_bad " .. (fb ~= "" and fb or "-") .. "\n")
end
