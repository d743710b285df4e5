-- Where a running VM keeps its private files: one directory per VM name,
-- mode 0700, under $XDG_RUNTIME_DIR/vmlua or /tmp/vmlua-UID. Removed when
-- the VM ends.
local core = require "vmlua.core"

local runtime = {}

function runtime.root()
  local override = os.getenv("VMLUA_RUNTIME_DIR")
  if override and override ~= "" then return override end
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" then return xdg .. "/vmlua" end
  return "/tmp/vmlua-" .. core.getuid()
end

-- The paths a VM named `name` uses; nothing is created.
function runtime.paths(name)
  local dir = runtime.root() .. "/" .. name
  return {
    dir = dir,
    qmp = dir .. "/qmp.sock",
    console = dir .. "/console.sock",
    log = dir .. "/console.log",
    pid = dir .. "/pid",
  }
end

return runtime
