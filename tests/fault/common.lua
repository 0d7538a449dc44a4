-- Shared by the wrk scripts of the outage test (tests/e2e/outage.bats),
-- loaded with dofile() from each. wrk runs one Lua state per thread and
-- one more for setup() and done().
--
-- Each answer is counted by its status and by the 100 ms slice of wall
-- time (CLOCK_REALTIME, the clock `date +%s%3N` reads) in which it
-- arrived, so that the test can line the answers up with the moments it
-- stopped and started PostgreSQL and Redis. done() writes the counts to
-- the file named by the script's second argument:
--   summary requests=N connect=N read=N write=N timeout=N codes=200:N,503:N
--   slice <ms at the slice's start> <status> <count>
-- (one slice line for each slice and status that occurred; the connect,
-- read, write and timeout errors are wrk's, which it does not time).
--
-- Arguments of every script: FIRST OUT [DELAY_MS], FIRST the script's
-- own (its input file, or a tag); DELAY_MS (default 0) is a pause before
-- each request of a connection, to keep the load moderate (the sanitizer
-- build is two to three times slower).

-- with_headers, read_lines and the request lists.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../bench/requests.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } af_fault_timespec;
int clock_gettime(int clock_id, af_fault_timespec *ts);
]]
local ts = ffi.new("af_fault_timespec")
local CLOCK_REALTIME = 0
local SLICE_MS = 100

function now_ms()
    ffi.C.clock_gettime(CLOCK_REALTIME, ts)
    return tonumber(ts.tv_sec) * 1000 + math.floor(tonumber(ts.tv_nsec) / 1e6)
end

local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    threads[#threads + 1] = thread
end

-- Per thread: counts["<slice ms> <status>"] = n; out: the summary file.
counts = {}
out = nil
local pause = 0

-- common_init(args): the arguments every script shares.
function common_init(args)
    out = assert(args[2], "no output file given")
    pause = tonumber(args[3] or "0") or 0
end

-- A 503 counts as "503!" when it lacks what API.md promises with it
-- (Retry-After and a problem+json body): a 503 of the web server itself,
-- for a FastCGI backend it could not reach, has neither.
local function bare_503(headers)
    local retry, problem = false, false
    for k, v in pairs(headers) do
        k = k:lower()
        if k == "retry-after" then retry = true end
        if k == "content-type" and v:lower():find("application/problem+json", 1, true) then problem = true end
    end
    return not (retry and problem)
end

function count_status(status, headers)
    local slice = math.floor(now_ms() / SLICE_MS) * SLICE_MS
    local code = tostring(status)
    if status == 503 and bare_503(headers) then code = "503!" end
    local key = slice .. " " .. code
    counts[key] = (counts[key] or 0) + 1
end

function delay()
    return pause
end


function done(summary, latency, requests)
    local all, by_code, path = {}, {}, nil
    for _, t in ipairs(threads) do
        path = path or t:get("out")
        for k, v in pairs(t:get("counts") or {}) do
            all[k] = (all[k] or 0) + v
            local code = k:match(" (%S+)$")
            by_code[code] = (by_code[code] or 0) + v
        end
    end
    local codes = {}
    for c in pairs(by_code) do codes[#codes + 1] = c end
    table.sort(codes)
    local parts = {}
    for _, c in ipairs(codes) do parts[#parts + 1] = c .. ":" .. by_code[c] end
    local keys = {}
    for k in pairs(all) do keys[#keys + 1] = k end
    table.sort(keys)
    local f = assert(io.open(assert(path, "no output file"), "w"))
    local e = summary.errors
    f:write(string.format("summary requests=%d connect=%d read=%d write=%d timeout=%d codes=%s\n",
        summary.requests, e.connect, e.read, e.write, e.timeout,
        #parts > 0 and table.concat(parts, ",") or "-"))
    for _, k in ipairs(keys) do f:write("slice ", k, " ", all[k], "\n") end
    f:close()
end
