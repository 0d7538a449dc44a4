-- GET the URL given to wrk, unchanged (static file, trivial responder).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
