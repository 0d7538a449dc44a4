-- Shared by the wrk scripts of bench.sh, loaded with dofile() from each.
--
-- Each thread gets a number (tid, from 0) before its init() runs. Scripts
-- that define response() count the status codes they see in `codes`; done()
-- adds them up over the threads and prints one machine-readable line:
--   WRKSTAT requests=N seconds=S rps=R p50_us=N p99_us=N non2xx=N
--           connect=N read=N write=N timeout=N codes=200:N,401:N starved=N
-- (non2xx is wrk's own count of answers with a status above 399).

-- with_headers, read_lines and the request lists.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "requests.lua")

local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    threads[#threads + 1] = thread
end

codes = {}
starved = 0

function count_status(status)
    codes[status] = (codes[status] or 0) + 1
end


function done(summary, latency, requests)
    local all, keys, nstarved = {}, {}, 0
    for _, t in ipairs(threads) do
        local c = t:get("codes") or {}
        for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
        nstarved = nstarved + (t:get("starved") or 0)
    end
    for k in pairs(all) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. ":" .. all[k] end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "WRKSTAT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d non2xx=%d "
            .. "connect=%d read=%d write=%d timeout=%d codes=%s starved=%d\n",
        summary.requests, secs, summary.requests / secs,
        latency:percentile(50), latency:percentile(99), e.status,
        e.connect, e.read, e.write, e.timeout,
        #parts > 0 and table.concat(parts, ",") or "-", nstarved))
end
