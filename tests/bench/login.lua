-- POST /api/v1/auth/login for many users in turn.
-- Arguments: FILE (lines "email<TAB>password").
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local next_request

function init(args)
    next_request = cycle(login_requests(args[1]))
end

function request()
    return next_request()
end

function response(status, headers, body)
    count_status(status)
end
