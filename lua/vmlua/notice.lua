-- Notices: what vmlua tells on stderr that is not an error, as
-- "vmlua: ..." (TCG emulation, a VM forced off, files of a dead run
-- removed). `vmlua -q` silences them; errors are always reported.
-- VMLUA_DEBUG=qmp (a comma-separated list of topics) turns on debug output.
local notice = { quiet = false }

function notice.say(message)
  if notice.quiet then return end
  io.stderr:write("vmlua: ", message, "\n")
  io.stderr:flush()
end

-- Whether VMLUA_DEBUG names `topic` (VMLUA_DEBUG=qmp, or qmp,other).
function notice.debugging(topic)
  local list = os.getenv("VMLUA_DEBUG") or ""
  for word in list:gmatch("[^,%s]+") do
    if word == topic or word == "all" then return true end
  end
  return false
end

-- A debug line on stderr: "vmlua: qmp: ...".
function notice.debug(topic, message)
  io.stderr:write("vmlua: ", topic, ": ", message, "\n")
  io.stderr:flush()
end

return notice
