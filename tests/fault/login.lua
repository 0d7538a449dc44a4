-- POST /api/v1/auth/login for many users in turn.
-- Arguments: CREDENTIALS OUT [DELAY_MS]; CREDENTIALS has lines
-- "email<TAB>password".
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

local reqs, i = {}, 0

function init(args)
    common_init(args)
    local headers = with_headers({ ["Content-Type"] = "application/json" })
    for _, line in ipairs(read_lines(args[1])) do
        local email, password = line:match("^([^\t]+)\t(.+)$")
        local body = string.format('{"email":"%s","password":"%s"}', email, password)
        reqs[#reqs + 1] = wrk.format("POST", nil, headers, body)
    end
    assert(#reqs > 0, "no users")
    i = (tid * 7919) % #reqs
end

function request()
    i = i % #reqs + 1
    return reqs[i]
end

function response(status, headers, body)
    count_status(status, headers)
end
