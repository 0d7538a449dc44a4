-- GET /api/v1/users/me with the access tokens of many users, one after
-- the other (each thread starts at a different place in the list).
-- Arguments: FILE (one access token a line).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local reqs, i = {}, 0

function init(args)
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
