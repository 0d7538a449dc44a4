-- GET the URL given to wrk with the access tokens of many users, one after
-- the other (each thread starts at a different place in the list): for
-- GET /api/v1/users/me and for a location behind the gate alike.
-- Arguments: TOKENS OUT [DELAY_MS]; TOKENS has one access token a line.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local next_request

function init(args)
    common_init(args)
    next_request = cycle(bearer_requests(args[1]))
end

function request()
    return next_request()
end

function response(status, headers, body)
    count_status(status, headers)
end
