-- wrk script for scripts/bench_serving.py: POST JSON bodies cycling through real queries.
--
--   wrk -t1 -c32 -d15s --latency --timeout 30s -s loadtests/wrk_classify.lua http://127.0.0.1:8000/classify -- BODIES
--
-- BODIES: a file with one JSON request body per line (e.g. {"text": "what is my balance"}).
-- Each wrk thread starts at its own offset and cycles through the bodies in order.
-- done() prints one line `WRK_RESULT {json}`: request and error counts, duration, latency mean/max and
-- percentiles in microseconds. `status_errors` is wrk's own count of responses with status > 399 (the
-- "Non-2xx or 3xx responses" line), which costs nothing. Set WRK_COUNT_STATUS=1 to also count every
-- status code in a response() hook: wrk then parses each response into Lua, which is slower.

local bodies = {}
local counter = 0
local threads = {}
statuses = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s wrk_classify.lua URL -- BODIES_FILE")
   end
   for line in io.lines(path) do
      if #line > 0 then
         bodies[#bodies + 1] = line
      end
   end
   if #bodies == 0 then
      error("no request bodies in " .. path)
   end
   counter = ((thread_index or 0) * 7919) % #bodies
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter % #bodies + 1
   return wrk.format(nil, nil, nil, bodies[counter])
end

if os.getenv("WRK_COUNT_STATUS") == "1" then
   function response(status, headers, body)
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local parts = {
      string.format('"requests":%d', summary.requests),
      string.format('"duration_us":%d', summary.duration),
      string.format('"bytes":%d', summary.bytes),
      string.format('"connect_errors":%d', e.connect),
      string.format('"read_errors":%d', e.read),
      string.format('"write_errors":%d', e.write),
      string.format('"status_errors":%d', e.status),
      string.format('"timeouts":%d', e.timeout),
      string.format('"latency_mean_us":%.1f', latency.mean),
      string.format('"latency_stdev_us":%.1f', latency.stdev),
      string.format('"latency_min_us":%d', latency.min),
      string.format('"latency_max_us":%d', latency.max),
   }
   for _, p in ipairs({ 50, 90, 95, 99, 99.9 }) do
      parts[#parts + 1] = string.format('"p%s_us":%d', string.gsub(tostring(p), "%.", "_"), latency:percentile(p))
   end
   if os.getenv("WRK_COUNT_STATUS") == "1" then
      local merged = {}
      for _, thread in ipairs(threads) do
         local counts = thread:get("statuses") or {}
         for code, n in pairs(counts) do
            merged[code] = (merged[code] or 0) + n
         end
      end
      local items = {}
      for code, n in pairs(merged) do
         items[#items + 1] = string.format('"%s":%d', code, n)
      end
      parts[#parts + 1] = '"status_counts":{' .. table.concat(items, ",") .. "}"
   end
   io.write("WRK_RESULT {" .. table.concat(parts, ",") .. "}\n")
end
