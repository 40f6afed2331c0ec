-- wrk script: every request is one device's check-in, the devices taken in turn from the token
-- file named by $TOKENS (one per line). Each wrk thread starts at its own place in the list.
-- With METHOD=GET and URLPATH set, the same requests (same headers) go to a static file instead:
-- the nginx reference.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local method = os.getenv("METHOD") or "POST"
local path = os.getenv("URLPATH") or "/api/device/v1/checkin"
local body = '{"device_type":"gw-1","installed":{"rootfs":{"sha256":"' ..
  string.rep("5e", 32) .. '","version":"1.0"}},"provides":{}}\n'
if method == "GET" then body = nil end
local counter = 0
local i = 1

function setup(thread)
  counter = counter + 1
  thread:set("start", counter * 7919)
end

function init(args)
  i = (start or 1) % #tokens + 1
end

function request()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format(method, path, {["Authorization"] = "Bearer " .. tokens[i],
                                   ["Content-Type"] = "application/json"}, body)
end
