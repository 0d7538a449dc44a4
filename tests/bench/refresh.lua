-- POST /api/v1/auth/refresh, using every refresh token exactly once.
--
-- Each thread owns a share of the sessions (line n goes to thread
-- n % THREADS) and keeps their current refresh tokens in a queue: a request
-- takes the oldest, its answer puts the rotated one at the end. A thread
-- has no more requests in flight than connections, so a share larger than
-- that never runs dry unless refreshes fail; a request that finds the queue
-- empty sends a token that cannot work and is counted as `starved`.
-- Arguments: FILE (one refresh token a line), THREADS.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local queue, head, tail = {}, 1, 0
local headers

local function push(token)
    tail = tail + 1
    queue[tail] = token
end

function init(args)
    local nthreads = tonumber(args[2]) or 1
    headers = with_headers({ ["Content-Type"] = "application/json" })
    for n, token in ipairs(read_lines(args[1])) do
        if (n - 1) % nthreads == tid then push(token) end
    end
end

function request()
    local token
    if head <= tail then
        token = queue[head]
        queue[head] = nil
        head = head + 1
    else
        starved = starved + 1
        token = "starved"
    end
    return wrk.format("POST", nil, headers, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
    count_status(status)
    if status == 200 then
        local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
        if token then push(token) end
    end
end
