-- POST /api/v1/auth/register, each request with an address of its own.
-- Arguments: TAG OUT [DELAY_MS]. The addresses are
-- fault-TAG-<thread>-<n>@example.test. The address of every 201 answer
-- (taken from the user object in its body, as the service stored it) is
-- appended at once to OUT.created.<thread>, so that the list survives
-- however wrk ends.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local tag, n, headers, created = nil, 0, nil, nil
local PASSWORD = "amber quartz meadow lantern"

function init(args)
    common_init(args)
    tag = assert(args[1], "no tag given")
    headers = with_headers({ ["Content-Type"] = "application/json" })
    created = assert(io.open(out .. ".created." .. tid, "a"))
end

function request()
    n = n + 1
    local email = string.format("fault-%s-%d-%d@example.test", tag, tid, n)
    local body = string.format('{"email":"%s","password":"%s"}', email, PASSWORD)
    return wrk.format("POST", nil, headers, body)
end

-- Several requests of a thread are in flight at once: which address an
-- answer is for is read from its body.
function response(status, headers, body)
    count_status(status, headers)
    if status == 201 then
        local email = body:match('"email"%s*:%s*"([^"]+)"')
        created:write((email or ("?unparsed " .. body:gsub("%s", " "))), "\n")
        created:flush()
    end
end
