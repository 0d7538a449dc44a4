-- GET /api/v1/users/me with the access tokens of many users, one after
-- the other (each thread starts at a different place in the list).
-- Arguments: FILE (one access token a line).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local next_request

function init(args)
    next_request = cycle(bearer_requests(args[1]))
end

function request()
    return next_request()
end
