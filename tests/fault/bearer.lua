-- GET the URL given to wrk with the access tokens of many users, one after
-- the other (each thread starts at a different place in the list): for
-- GET /api/v1/users/me and for a location behind the gate alike.
-- Arguments: TOKENS OUT [DELAY_MS]; TOKENS has one access token a line.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local reqs, i = {}, 0

function init(args)
    common_init(args)
    for _, token in ipairs(read_lines(args[1])) do
        reqs[#reqs + 1] = wrk.format("GET", nil, with_headers({ Authorization = "Bearer " .. token }))
    end
    assert(#reqs > 0, "no access tokens")
    i = (tid * 7919) % #reqs
end

function request()
    i = i % #reqs + 1
    return reqs[i]
end

function response(status, headers, body)
    count_status(status, headers)
end
