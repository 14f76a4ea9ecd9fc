-- GET <path prefix><id> with an id drawn at random from a file (one id a line).
-- Args: <ids file> <path prefix>, e.g. /select?id=
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local ids = {}
local prefix = "/"

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then table.insert(ids, line) end
   end
   assert(#ids > 0, "no ids in " .. args[1])
   prefix = args[2]
   math.randomseed(os.time() * 100 + (thread_id or 0))
end

function request()
   return wrk.format("GET", prefix .. ids[math.random(#ids)])
end
