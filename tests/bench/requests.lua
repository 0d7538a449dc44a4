-- Request lists shared by the wrk scripts of the benchmark (tests/bench)
-- and of the outage test (tests/fault), loaded with dofile() by their
-- common.lua. Requests are built once, in init(), with wrk.format.

-- wrk.headers (those given with -H, and Host) with EXTRA added: wrk.format
-- uses the table it is given instead of wrk.headers, not in addition.
function with_headers(extra)
    local h = {}
    for k, v in pairs(wrk.headers) do h[k] = v end
    for k, v in pairs(extra or {}) do h[k] = v end
    return h
end

-- The lines of a file, without empty ones.
function read_lines(path)
    local f = assert(io.open(path, "r"))
    local t = {}
    for line in f:lines() do
        if line ~= "" then t[#t + 1] = line end
    end
    f:close()
    return t
end

-- A GET of the URL given to wrk for each access token in FILE (one a line).
function bearer_requests(path)
    local reqs = {}
    for _, token in ipairs(read_lines(path)) do
        reqs[#reqs + 1] = wrk.format("GET", nil, with_headers({ Authorization = "Bearer " .. token }))
    end
    assert(#reqs > 0, "no access tokens")
    return reqs
end

-- A login POST for each line "email<TAB>password" of FILE.
function login_requests(path)
    local reqs = {}
    local headers = with_headers({ ["Content-Type"] = "application/json" })
    for _, line in ipairs(read_lines(path)) do
        local email, password = line:match("^([^\t]+)\t(.+)$")
        local body = string.format('{"email":"%s","password":"%s"}', email, password)
        reqs[#reqs + 1] = wrk.format("POST", nil, headers, body)
    end
    assert(#reqs > 0, "no users")
    return reqs
end

-- A request() function going round reqs, each thread (tid) starting at a
-- different place in the list.
function cycle(reqs)
    local i = (tid * 7919) % #reqs
    return function()
        i = i % #reqs + 1
        return reqs[i]
    end
end
