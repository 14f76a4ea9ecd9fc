-- Shared by every bench script: count non-200 answers per thread, keep one sample body,
-- and print one JSON line (prefixed "BENCH_JSON ") with the totals when the run ends.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

non200 = 0
sample = ""

function response(status, headers, body)
   if status ~= 200 then
      non200 = non200 + 1
      if sample == "" then
         sample = tostring(status) .. " " .. string.sub(body or "", 1, 500)
      end
   end
end

local function quote(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local bad, first = 0, ""
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("non200") or 0)
      if first == "" then first = thread:get("sample") or "" end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"non200":%d,' ..
      '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"mean_us":%.1f,"sample":%s}\n',
      summary.requests, summary.duration, bad,
      e.connect + e.read + e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, quote(first)))
end
